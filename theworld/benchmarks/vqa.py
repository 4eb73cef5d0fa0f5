"""Plain visual question answering: ``image``, ``question``, ``answer`` (a string or a list of accepted ones). The
answer is generated and matched after VQA-style normalisation (``theworld.evaluate.normalize_answer``)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from theworld.benchmarks.formats import BenchmarkFormat, Question, Row, equal_weights, hidden


def read(row: Row, images: Sequence[Image.Image]) -> Question:
    values = row.values
    question_id = str(values.get("idx", values.get("question_id", row.number)))
    answer = values["answer"]
    answers = [] if hidden(answer) else [str(a) for a in (answer if isinstance(answer, list) else [answer])]
    return Question(question_id, row.config, None, tuple(images), values["question"], [], answers, "all")


VQA = BenchmarkFormat(
    name="vqa",
    columns=("image", "question", "answer"),
    image_columns=("image",),
    task=lambda row: row.config,
    read=read,
    extract_answer=lambda text, question: text,
    total_weights=equal_weights,
    total_rule="the share of all questions answered right",
    protocol="VQA: the question, a generated answer matched after normalisation",
)
