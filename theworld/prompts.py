"""The prompt of a multiple-choice question, shared by training data and benchmarks: a model is asked in evaluation
exactly what it was trained on.

The layout is BLINK's own ``prompt`` column (question, "Select from the following choices.", one ``(A) ...`` line per
choice); the answer is the option's letter, ``(A)``.

Example:
    >>> multiple_choice_prompt("Which shape is larger?", ["the left one", "the right one"])
    'Which shape is larger?\\nSelect from the following choices.\\n(A) the left one\\n(B) the right one'
    >>> option_letters(2)
    ['(A)', '(B)']
"""

from __future__ import annotations

from collections.abc import Sequence


def option_letters(count: int) -> list[str]:
    """``(A)``, ``(B)``, ... for ``count`` choices: what a multiple-choice answer is."""
    return [f"({chr(ord('A') + index)})" for index in range(count)]


def multiple_choice_prompt(question: str, choices: Sequence[str]) -> str:
    lines = [question.strip(), "Select from the following choices."]
    lines += [f"{letter} {choice}" for letter, choice in zip(option_letters(len(choices)), choices, strict=True)]
    return "\n".join(lines)
