"""Benchmarks of the pipeline's stages; each is a module runnable with `python -m benchmarks.<name>`."""
