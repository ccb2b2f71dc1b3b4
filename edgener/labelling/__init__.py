"""Tagging files larger than memory into an output folder, shard by shard, resumable: in this
process or on Ray Data (`edge-ner label ... --output DIR [--engine ray]`)."""
