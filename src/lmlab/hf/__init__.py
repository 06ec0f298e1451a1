"""The Hugging Face door: mapping tables between lmlab's backbone and BERT, GPT-2, Llama and T5, tokenizer
conversion both ways, and reading HF checkpoints as lmlab starting points. Depends on models and data only; the
export command (lmlab.publishing) and the run core's starting point build on it."""
