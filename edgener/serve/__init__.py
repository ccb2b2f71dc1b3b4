"""`edge-ner serve`: an artifact behind an HTTP API (the serve extra)."""
