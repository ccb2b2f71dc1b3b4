"""Backends outside the base install: Hugging Face folders in PyTorch, neural-compressor's
INT8 graphs, TensorRT engines and programs (the train, quantize and tensorrt extras)."""
