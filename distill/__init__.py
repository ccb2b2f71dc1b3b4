"""Distill stage: train small students from the teacher with TextBrewer."""
