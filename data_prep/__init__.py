"""Turn datasets into the data contracts of align (SFT messages, preference pairs, prompts, pretraining text)."""
