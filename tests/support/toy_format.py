"""A benchmark format registered from outside theworld, as docs/evaluation.md's "Adding a benchmark" shows: multiple
choice with a ``category`` column, the total the mean over categories. Imported before the CLI runs."""

from theworld.benchmarks import register_format
from theworld.benchmarks.formats import BenchmarkFormat, equal_weights, leading_letter, multiple_choice_question

TOY = register_format(BenchmarkFormat(
    name="toy",
    columns=("image", "question", "choices", "answer", "category"),
    image_columns=("image",),
    task=lambda row: row.values["category"],
    read=lambda row, images: multiple_choice_question(
        row, images, row.values["category"], None, row.values["category"]),
    extract_answer=leading_letter,
    total_weights=equal_weights,
    total_rule="mean of the category accuracies",
    protocol="toy: its prompt, a generated answer, its leading letter",
))
