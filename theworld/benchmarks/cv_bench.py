"""CV-Bench (``nyu-visionx/CV-Bench``): configs ``2D`` and ``3D``, and ``default`` holding both again; split ``test``.

Columns: ``idx``, ``type``, ``task``, ``image``, ``question``, ``choices``, ``answer`` like ``(A)``, ``prompt``,
``filename``, ``source``, ``source_dataset``, ``source_filename``, ``target_class``, ``target_size``, ``bbox``.
The model is asked the ``prompt`` column; the letter is read as lmms-eval's ``cv_bench`` task reads it; the
published total weighs the images' sources: 1/2 ((ADE20K + COCO) / 2 + Omni3D), the 2D and 3D halves alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from theworld.benchmarks.formats import BenchmarkFormat, Row, leading_letter, letter_decided, multiple_choice_question
from theworld.errors import UserError

SOURCE_WEIGHTS = {"ADE20K": 0.25, "COCO": 0.25, "Omni3D": 0.5}


def read(row: Row, images: Sequence[Image.Image]):
    task, source = str(row.values.get("task") or row.config), str(row.values.get("source") or "")
    if source not in SOURCE_WEIGHTS:
        raise UserError(
            f"benchmark {row.where}, question {row.values.get('idx', row.number)}: source {source!r} is none of "
            f"CV-Bench's ({', '.join(SOURCE_WEIGHTS)}), which its total weighs. Fix that row."
        )
    return multiple_choice_question(row, images, task, source, source)


def total_weights(sources: Sequence[str]) -> dict[str, float]:
    """The published weights of the sources present, renormalised: 2D alone gives (ADE20K + COCO) / 2."""
    present = sum(SOURCE_WEIGHTS[source] for source in sources)
    return {source: SOURCE_WEIGHTS[source] / present for source in sources}


CV_BENCH = BenchmarkFormat(
    name="cv-bench",
    columns=("image", "question", "choices", "answer", "task", "source"),
    image_columns=("image",),
    task=lambda row: str(row.values.get("task") or row.config),
    read=read,
    extract_answer=leading_letter,
    answered=letter_decided,
    total_weights=total_weights,
    total_rule="1/2 ((ADE20K + COCO) / 2 + Omni3D) over the images' sources (CV-Bench's total)",
    protocol="CV-Bench: the dataset's prompt, a generated answer, its leading letter (lmms-eval's reading)",
    repeated_configs=("default",),
)
