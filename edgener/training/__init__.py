"""What the pipeline's stages share: configs, datasets, the pretrained backbone, the
training loop, and publishing a folder with its manifest and model card (the train
extra)."""
