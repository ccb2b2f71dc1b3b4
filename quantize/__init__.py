"""Quantize stage: INT8 artifacts for CPU (ONNX Runtime, neural-compressor) and NVIDIA GPUs."""
