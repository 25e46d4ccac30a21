"""The gold judge of the sort task (`sort c a k f` -> `a c f k`): data.judge=sort_judge:score, with this directory on
PYTHONPATH."""


def _answer(prompt: str) -> list[str]:
    return sorted(prompt.split()[1:])


def score(prompt: str, response: str, ended: bool = True) -> float:
    """The share of positions holding the right letter, over the longer of the answer and the response; 0 for a
    response that never ended."""
    if not ended:
        return 0.0
    answer, given = _answer(prompt), response.split()
    return sum(a == g for a, g in zip(answer, given)) / max(len(answer), len(given))


def score_details(prompt: str, response: str) -> dict[str, bool]:
    answer, given = _answer(prompt), response.split()
    return {"length": len(given) == len(answer), "first": given[:1] == answer[:1], "last": given[-1:] == answer[-1:],
            "middle": given[1:-1] == answer[1:-1]}
