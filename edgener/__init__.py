"""edge-ner: a BERT NER model made small and fast for edge devices, measured, and served.

The package in layers, each importing only the ones below it:

- edgener.runtime: what `pip install edge-ner` runs on the box (ONNX Runtime, tokenizers,
  numpy and rich, nothing else): text to words to windows, backends' logits to entities.
- edgener.backends: the backends that need PyTorch (the teacher and students in eager
  mode, neural-compressor's INT8 graphs) or TensorRT, over the runtime's protocol.
- edgener.predictor: any artifact folder to a Predictor, whatever its backend.
- edgener.training: what the pipeline's stages share (configs, datasets, the pretrained
  backbone, the training loop, publishing a folder with its model card).
- edgener.serve: `edge-ner serve`, the HTTP service.
- edgener.cli: the `edge-ner` command.

The stages (teacher, distill, quantize, bench) stand above all of them.
"""
