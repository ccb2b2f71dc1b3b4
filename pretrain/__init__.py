"""Stage 0: masked-language-model pretraining of the backbone on the user's own text."""
