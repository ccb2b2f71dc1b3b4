"""Teacher stage: fine-tune a BERT-architecture encoder for NER."""
