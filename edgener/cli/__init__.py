"""The `edge-ner` command (edgener.cli.main)."""
