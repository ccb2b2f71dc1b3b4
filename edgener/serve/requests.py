"""What a request may be: its body read within the size limit, and its texts checked, each
failure an ApiError answered as JSON."""

from __future__ import annotations

import json

from starlette.requests import Request

from edgener.serve.config import ServeConfig


class ApiError(Exception):
    """An error answered as JSON: {"error": message}, with this status."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def parse_texts(body: bytes, config: ServeConfig) -> tuple[list[str], bool, bool]:
    """The texts of a request body, whether it sent one `text` (else `texts`), and whether
    its `texts` are parts of one document (`"document": true`); an ApiError naming the
    field for anything else."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise ApiError(400, "the body is not valid JSON: nested too deep") from None
    if not isinstance(payload, dict):
        raise ApiError(422, 'the body must be a JSON object with "text" or "texts"')
    unknown = sorted(set(payload) - {"text", "texts", "document"})
    if unknown:
        raise ApiError(422, f"unknown field {unknown[0]!r}: send \"text\" or \"texts\"")
    document = payload.get("document", False)
    if not isinstance(document, bool) or (document and "texts" not in payload):
        raise ApiError(422, '"document" must be true or false, and goes with "texts" (the '
                            "parts of one document, in order)")
    if ("text" in payload) == ("texts" in payload):
        raise ApiError(422, 'send exactly one of "text" (a string) and "texts" (a list of '
                            "strings)")
    single = "text" in payload
    texts = [payload["text"]] if single else payload["texts"]
    if single and not isinstance(payload["text"], str):
        raise ApiError(422, '"text" must be a string')
    if not single and not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
        raise ApiError(422, '"texts" must be a list of strings')
    if len(texts) > config.max_texts:
        raise ApiError(413, f"{len(texts)} texts in one request; the limit is "
                            f"{config.max_texts} (--max-texts)")
    for index, text in enumerate(texts):
        where = '"text"' if single else f'"texts"[{index}]'
        if len(text) > config.max_text_chars:
            raise ApiError(413, f"{where} has {len(text)} characters; the limit is "
                                f"{config.max_text_chars} (--max-text-chars)")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # JSON can escape a lone surrogate; no tokenizer takes it
            raise ApiError(422, f"{where} is not valid Unicode (it holds a lone surrogate "
                                "escape)") from None
    return texts, single, document


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit`: from its
    Content-Length before anything is read, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {declared} bytes; the limit is {limit} "
                            "(--max-body-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)
