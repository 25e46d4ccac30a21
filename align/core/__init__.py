"""The base every other layer builds on: the config types, data contracts and records, chat tokens, hub access and
user errors. Imports nothing else of align, and no torch, transformers or trl at module level."""
