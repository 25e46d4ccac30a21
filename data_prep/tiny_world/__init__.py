"""The offline tiny world: a verifiable instruction-following task with an exact, programmatic gold judge.

A prompt asks for a response built from a 48-word vocabulary under one to three checkable constraints, stated in
fixed slots (`words 5 start sun end any`). The judge scores a response by the fraction of constraints it meets.
Because the judge is exact, the tiny pipeline can show that each stage helps, not only that it runs.
"""

from __future__ import annotations

from pathlib import Path

from align.core.tokens import train_tiny_tokenizer
from data_prep.tiny_world.build import build, corpus

VERSION = 3  # bump whenever the generated files change, so that directories built by an older version are not reused


def prepare(source, data, out_dir: Path) -> dict[str, int]:
    """Entry point for data_prep.prepare: every split plus the tiny tokenizer trained on the corpus."""
    counts = build(out_dir, data.world)
    train_tiny_tokenizer(corpus(out_dir), data.world.tokenizer_vocab_size, out_dir / "tokenizer")
    return counts
