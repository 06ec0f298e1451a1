"""Data pipeline: sources -> documents -> tokenizer -> token cache -> packed blocks -> batches."""
