"""The API's OpenAPI 3.1 description, written out (the request schema is two fields)."""

from __future__ import annotations

from edgener.serve.config import ServeConfig


def openapi_document(config: ServeConfig) -> dict:
    """The API's OpenAPI 3.1 description."""
    entity = {"type": "object", "required": ["type", "text", "start", "end", "score"],
              "properties": {
                  "type": {"type": "string", "examples": ["PER"]},
                  "text": {"type": "string", "description": "the input from start to end"},
                  "start": {"type": "integer", "description": "character offset, inclusive"},
                  "end": {"type": "integer", "description": "character offset, exclusive"},
                  "score": {"type": "number", "description": "mean probability of its tags"}}}
    error = {"type": "object", "required": ["error"],
             "properties": {"error": {"type": "string"}}}
    text = {"type": "string", "maxLength": config.max_text_chars}

    def errors(*codes: int) -> dict:
        return {str(code): {"description": description,
                            "content": {"application/json": {"schema": error}}}
                for code, description in ((400, "the body is not JSON"),
                                          (413, "over a size limit"),
                                          (422, "a field is missing or of the wrong type"),
                                          (500, "the model call failed"),
                                          (503, "loading, or the queue is full"),
                                          (504, "not answered within the deadline"))
                if code in codes}

    def get(summary: str, schema: dict, *codes: int) -> dict:
        return {"get": {"summary": summary, "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
            **errors(*codes)}}}

    document = {
        "openapi": "3.1.0",
        "info": {"title": "edge-ner", "version": "1",
                 "description": "Named entities, with character offsets, from raw text."},
        "paths": {
            "/v1/entities": {"post": {
                "summary": "Entities of one text, or of several in input order",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [
                        {"type": "object", "required": ["text"], "additionalProperties": False,
                         "properties": {"text": text}},
                        {"type": "object", "required": ["texts"], "additionalProperties": False,
                         "properties": {"texts": {"type": "array", "items": text,
                                                  "maxItems": config.max_texts},
                                        "document": {
                                            "type": "boolean", "default": False,
                                            "description": "the texts are consecutive "
                                            "parts of one document: an artifact trained "
                                            "with context reads each with the others "
                                            "around it"}}}]}}}},
                "responses": {
                    "200": {"description": "`entities` for `text`, `results` for `texts`",
                            "content": {"application/json": {"schema": {"oneOf": [
                                {"type": "object", "required": ["entities"], "properties": {
                                    "entities": {"type": "array", "items": entity}}},
                                {"type": "object", "required": ["results"], "properties": {
                                    "results": {"type": "array", "items": {
                                        "type": "array", "items": entity}}}}]}}}},
                    **errors(400, 413, 422, 500, 503, 504)}}},
            "/healthz": get("200 once the model is loaded and warmed up, 503 before",
                            {"type": "object", "properties": {"status": {"type": "string"}}},
                            503),
            "/v1/model": get("The artifact's card", {"type": "object"}, 503),
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
    }
    if config.api_key:  # the key itself never appears, only that one is needed
        document["components"] = {"securitySchemes": {"apiKey": {"type": "http",
                                                                 "scheme": "bearer"}}}
        unauthorized = {"401": {"description": "no API key, or not the right one",
                                "content": {"application/json": {"schema": error}}}}
        for path, operations in document["paths"].items():
            if path == "/healthz" or (path == "/metrics" and not config.metrics_need_key):
                continue
            for operation in operations.values():
                operation["security"] = [{"apiKey": []}]
                operation["responses"] |= unauthorized
    return document
