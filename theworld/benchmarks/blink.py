"""BLINK (``BLINK-Benchmark/BLINK``): one config per task, splits ``val`` and ``test`` (answers hidden).

Columns: ``idx``, ``question``, ``sub_task``, ``image_1``..``image_4`` (``image_2``.. filled in the multi-image
tasks: Art_Style, Jigsaw, Multi-view_Reasoning, the correspondence tasks...), ``choices``, ``answer`` like ``(A)``,
``prompt``, ``explanation``. BLINK's ``eval/test_benchmark.py`` asks the model the ``prompt`` column as it is; the
letter is read as lmms-eval's ``blink`` task reads it; the published total is the plain mean of the task
accuracies (``eval/evaluate.py``); the test server takes ``{idx: "(A)"}`` as JSON.
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

IMAGE_COLUMNS = ("image_1", "image_2", "image_3", "image_4")


def read(row: Row, images: Sequence[Image.Image]):
    # BLINK's tasks are its configs; the total averages them. A question's images (image_1.. in order) are all asked.
    return multiple_choice_question(row, images, row.config, row.values.get("sub_task"), row.config)


BLINK = BenchmarkFormat(
    name="blink",
    columns=("idx", "question", "choices", "answer", "prompt", *IMAGE_COLUMNS),
    image_columns=IMAGE_COLUMNS,
    task=lambda row: row.config,
    read=read,
    extract_answer=leading_letter,
    answered=letter_decided,
    total_weights=equal_weights,
    total_rule="mean of the task accuracies (BLINK's total)",
    protocol="BLINK: the dataset's prompt, a generated answer, its leading letter (lmms-eval's reading)",
)
