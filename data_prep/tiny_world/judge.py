"""The gold judge of the words task: the exact score of a response to a words-world prompt."""

from __future__ import annotations

from .task import MOOD_WORDS, Constraints, parse_prompt
from .world import fraction_met


def constraint_results(constraints: Constraints, response: str) -> dict[str, bool]:
    """Which of the prompt's constraints the response meets, by kind."""
    words = response.split()
    results = {}
    if constraints.words is not None:
        results["words"] = len(words) == constraints.words
    if constraints.start is not None:
        results["start"] = bool(words) and words[0] == constraints.start
    if constraints.end is not None:
        results["end"] = bool(words) and words[-1] == constraints.end
    if constraints.mood is not None:
        results["mood"] = bool(words) and all(word in MOOD_WORDS[constraints.mood] for word in words)
    return results


def gold_score(prompt: str, response: str, ended: bool = True) -> float:
    """Fraction of the prompt's constraints met; 0 for a response that never ended (no EOS)."""
    return fraction_met(constraint_results(parse_prompt(prompt), response), ended)


def gold_details(prompt: str, response: str) -> dict[str, bool]:
    """Which of the prompt's constraints the response meets, by kind (words, start, end, mood)."""
    return constraint_results(parse_prompt(prompt), response)
