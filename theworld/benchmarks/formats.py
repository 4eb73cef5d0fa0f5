"""A benchmark format as one record: how its rows become questions, how a generated answer is read, and how its
official total is computed. ``theworld.benchmarks`` registers BLINK, CV-Bench, plain multiple choice and plain VQA;
adding a benchmark is one file defining its ``BenchmarkFormat`` and one ``register_format`` call (docs/evaluation.md:
"Adding a benchmark").
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from PIL import Image

from theworld.errors import UserError
from theworld.prompts import multiple_choice_prompt, option_letters
from theworld.registry import Registry

HIDDEN_ANSWERS = ("", "hidden")  # what a test split with withheld answers holds in its answer column (or None)


@dataclass(frozen=True)
class Question:
    """One benchmark question. ``options`` are the letters (``(A)``...), empty for an open question, whose ``answers``
    are the accepted strings; a multiple-choice ``answers`` holds the right letter, and is empty where the split hides
    its answers (a test split: predictions only). ``stratum`` is the group the official total averages over.
    ``images`` are the question's images in the dataset's order (several for some BLINK tasks): each is asked with
    its own world block and Gemma image block."""

    id: str
    task: str
    sub_task: str | None
    images: tuple[Image.Image, ...]
    prompt: str
    options: list[str]
    answers: list[str]
    stratum: str

    @property
    def multiple_choice(self) -> bool:
        return bool(self.options)

    @property
    def answered(self) -> bool:
        """Whether the split gives this question's answer (a hidden test split does not)."""
        return bool(self.answers)


@dataclass(frozen=True)
class Row:
    """One dataset row as a format reads it: its values, its place, and where it comes from (for error messages)."""

    values: Mapping
    number: int
    config: str
    where: str


@dataclass(frozen=True)
class BenchmarkFormat:
    """Everything theworld needs to know about a benchmark's format.

    - ``columns``: the columns that identify it (a dataset with all of them is in this format);
    - ``image_columns``: where its images are (a row may fill several: multi-image questions);
    - ``task``: a row's task (what ``--limit`` stratifies by); ``read``: a row and its images (decoded, in the order
      of ``image_columns``) as a ``Question``;
    - ``extract_answer``: the answer read from a generated text, as the benchmark's published evaluation reads it;
      ``answered``: whether a text generated so far already decides that answer (generation stops there);
    - ``total_weights``: the official total's weight of each stratum present (``Question.stratum``), summing to 1;
      ``total_rule`` says it in words;
    - ``repeated_configs``: configs holding the other configs' rows again (evaluated only when named);
    - ``submission``: the file a hidden-answer split's server takes, from question id -> predicted answer (default:
      BLINK's, a JSON object);
    - ``protocol``: the published evaluation the official protocol follows (named in every output).
    """

    name: str
    columns: tuple[str, ...]
    image_columns: tuple[str, ...]
    task: Callable[[Row], str]
    read: Callable[[Row, Sequence[Image.Image]], Question]
    extract_answer: Callable[[str, Question], str]
    total_weights: Callable[[Sequence[str]], dict[str, float]]
    total_rule: str
    protocol: str
    repeated_configs: tuple[str, ...] = ()
    submission: Callable[[Mapping[str, str]], str] = lambda predictions: predictions_json(predictions)
    answered: Callable[[str], bool] | None = None


FORMATS: Registry[BenchmarkFormat] = Registry("benchmark format", "benchmark format")


def register_format(benchmark_format: BenchmarkFormat) -> BenchmarkFormat:
    """Makes ``benchmark_format`` one that ``load_benchmarks`` recognises (by its columns)."""
    return FORMATS.register(benchmark_format.name, benchmark_format)


def format_of(columns: Sequence[str], where: str) -> BenchmarkFormat:
    """The format whose identifying columns the dataset has; the one needing most columns where several fit (BLINK
    and CV-Bench before plain multiple choice, that before plain VQA)."""
    fitting = [f for f in FORMATS.values() if set(f.columns) <= set(columns)]
    if fitting:
        return max(fitting, key=lambda f: len(f.columns))
    described = "; ".join(f"{f.name}: {', '.join(f.columns)}" for f in FORMATS.values())
    raise UserError(
        f"benchmark {where} is in no format theworld reads: its columns are {', '.join(columns)}. The "
        f"formats and the columns they need are {described}. Rename the columns to one of these, or register a "
        f"format for it (docs/evaluation.md: Adding a benchmark)."
    )


# ------------------------------------------------------------------------------------------- shared pieces
LEADING_LETTER = re.compile(r"[(\s]*([A-Z])[).\s]*", re.IGNORECASE)


def leading_letter(text: str, question: Question) -> str:
    """The option a generated answer names, as lmms-eval's BLINK and CV-Bench tasks read it: the first letter after
    optional spaces and an opening parenthesis (``(B) lamp``, ``B.``, ``b``), as ``(B)``; ``""`` when the text does
    not start with one of the question's options."""
    match = LEADING_LETTER.match(text.strip())
    letter = f"({match.group(1).upper()})" if match else ""
    return letter if letter in question.options else ""


def letter_decided(text: str) -> bool:
    """Whether ``leading_letter`` already has its answer: a character past the leading spaces and parentheses (a
    letter, or something that makes it no answer)."""
    return bool(text.lstrip("(" + string.whitespace))


def predictions_json(predictions: Mapping[str, str]) -> str:
    """``{"<question id>": "<predicted answer>", ...}``: what BLINK's test server takes (its ``eval/evaluate.py``)."""
    return json.dumps(dict(predictions), indent=1) + "\n"


def equal_weights(strata: Sequence[str]) -> dict[str, float]:
    return {stratum: 1 / len(strata) for stratum in strata}


def hidden(answer) -> bool:
    return answer is None or str(answer).strip().lower() in HIDDEN_ANSWERS


def multiple_choice_question(
    row: Row, images: Sequence[Image.Image], task: str, sub_task: str | None, stratum: str
) -> Question:
    """A question with ``choices`` and an ``answer`` (a letter like ``(A)``, the choice's text, or hidden), asked with
    the dataset's own ``prompt`` (built as BLINK's where the dataset has none)."""
    values = row.values
    question_id = str(values.get("idx", values.get("question_id", row.number)))
    choices = [str(choice) for choice in values["choices"]]
    options = option_letters(len(choices))
    prompt = (values.get("prompt") or "").strip() or multiple_choice_prompt(values["question"], choices)
    answers: list[str] = []
    if not hidden(values["answer"]):
        answer = str(values["answer"]).strip()
        if answer not in options:
            if answer not in choices:
                raise UserError(
                    f"benchmark {row.where}, question {question_id}: the answer {answer!r} is neither an option "
                    f"letter ({', '.join(options)}) nor one of the choices {choices}. Fix that row."
                )
            answer = options[choices.index(answer)]
        answers = [answer]
    if sub_task and sub_task.replace(" ", "_").lower() == task.replace(" ", "_").lower():
        sub_task = None  # a sub-task naming the task again is no sub-task
    return Question(question_id, task, sub_task, tuple(images), prompt, options, answers, stratum)
