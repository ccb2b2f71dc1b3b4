"""The edge runtime: what `pip install edge-ner` runs, importing nothing beyond the base
dependencies (ONNX Runtime, tokenizers, numpy, rich)."""
