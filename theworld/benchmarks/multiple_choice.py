"""Plain multiple choice: ``image``, ``question``, ``choices``, ``answer`` (a letter like ``(A)`` or the choice's
text), and ``prompt`` if the dataset has one (BLINK's layout of question and choices otherwise).

This is also the worked example of a format: a reader, the answer extraction and the total. A new benchmark is a
file like this one and one ``register_format`` call (docs/evaluation.md: Adding a benchmark).
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from theworld.benchmarks.formats import (
    BenchmarkFormat,
    Row,
    equal_weights,
    leading_letter,
    letter_decided,
    multiple_choice_question,
)


def read(row: Row, images: Sequence[Image.Image]):
    return multiple_choice_question(row, images, row.config, None, "all")  # one stratum: the total pools questions


MULTIPLE_CHOICE = BenchmarkFormat(
    name="multiple-choice",
    columns=("image", "question", "choices", "answer"),
    image_columns=("image",),
    task=lambda row: row.config,
    read=read,
    extract_answer=leading_letter,
    answered=letter_decided,
    total_weights=equal_weights,
    total_rule="the share of all questions answered right",
    protocol="multiple choice: the prompt, a generated answer, its leading letter",
)
