"""Benchmarks in their published formats, read with ``datasets`` from a Hub id or a local folder laid out like one.

Three formats, told apart by their columns:

- ``blink``: BLINK (``BLINK-Benchmark/BLINK``): ``idx``, ``question``, ``sub_task``, ``image_1``..``image_4``,
  ``choices``, ``answer`` like ``(A)``, ``prompt``, ``explanation``; one config per task, split ``val``.
- ``cv-bench``: CV-Bench (``nyu-visionx/CV-Bench``): ``idx``, ``type``, ``task``, ``image``, ``question``,
  ``choices``, ``answer`` like ``(A)``, ``prompt``, ``source``...; configs ``2D`` / ``3D``, split ``test``.
- ``vqa``: plain visual question answering: ``image``, ``question``, ``answer`` (a string or a list of them).

A multiple-choice prompt is ``theworld.prompts.multiple_choice_prompt`` (the one training uses), whatever the
dataset's own ``prompt`` column says; the options scored are ``option_letters``. Questions with more than one image
(some BLINK tasks) are skipped and counted: a world block holds one image.

Example:
    >>> benchmark = load_benchmark("BLINK-Benchmark/BLINK", "Relative_Depth", "val")
    >>> benchmark.questions[0].options, benchmark.questions[0].answer
    (['(A)', '(B)'], '(A)')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from theworld.errors import UserError
from theworld.hub.refs import is_hub_repo_id
from theworld.prompts import multiple_choice_prompt, option_letters

BLINK_IMAGES = ("image_1", "image_2", "image_3", "image_4")
# The columns each format needs (the rest of a dataset's columns are ignored); the first whose columns are all
# there is the dataset's format.
FORMATS = {
    "blink": ("question", "choices", "answer", *BLINK_IMAGES),
    "cv-bench": ("image", "question", "choices", "answer"),
    "vqa": ("image", "question", "answer"),
}
# Tried in this order when the split is not given: BLINK publishes val (test answers are hidden), CV-Bench test.
PREFERRED_SPLITS = ("val", "validation", "test")


@dataclass(frozen=True)
class Question:
    """One benchmark question. ``options`` are the letters scored (``(A)``...), empty for an open question, whose
    ``answers`` are the accepted strings; a multiple-choice ``answers`` holds the right letter."""

    id: str
    task: str
    sub_task: str | None
    image: Image.Image
    prompt: str
    options: list[str]
    answers: list[str]

    @property
    def multiple_choice(self) -> bool:
        return bool(self.options)


@dataclass
class Benchmark:
    """The questions of one config and split, with what was left out (``skipped``: reason -> count)."""

    dataset: str
    config: str
    split: str
    format: str
    questions: list[Question]
    skipped: dict[str, int] = field(default_factory=dict)


def benchmark_configs(path: str) -> list[str]:
    """The configs of a Hub dataset or local folder (``default`` for one without ``configs:`` in its card)."""
    import datasets

    if not Path(path).is_dir() and not is_hub_repo_id(path):  # a path with a typo: no need to ask the Hub
        raise UserError(
            f"benchmark {path}: there is no such folder (relative paths start from {Path.cwd()}). Give "
            f"the folder of a benchmark laid out like a Hub dataset, or a Hub dataset id "
            f"(BLINK-Benchmark/BLINK)."
        )
    try:
        return datasets.get_dataset_config_names(path)
    except FileNotFoundError as err:
        raise UserError(
            f"benchmark {path}: no such local folder or Hub dataset ({_first_line(err)}). Give a Hub "
            f"dataset id (BLINK-Benchmark/BLINK, nyu-visionx/CV-Bench) or a folder laid out like one "
            f"(<Config>/<split>-00000-of-00001.parquet and a README.md listing its configs)."
        ) from None
    except ConnectionError as err:
        raise UserError(
            f"benchmark {path}: there is no local folder of that name (relative paths start from "
            f"{Path.cwd()}), and the Hub could not be reached to look for a dataset ({_first_line(err)}). "
            f"Check the path, or the network and HF_ENDPOINT for a Hub id."
        ) from None


def load_benchmarks(
    path: str, configs: list[str] | None = None, split: str | None = None, limit: int | None = None
) -> list[Benchmark]:
    """``configs`` of the benchmark (default: all it has), each as ``load_benchmark`` reads it; the benchmark's
    configs are asked for once."""
    available = benchmark_configs(path)
    for config in configs or ():
        if config not in available:
            raise UserError(
                f"benchmark {path} has no config {config!r}; its configs are {', '.join(available)}. "
                f"Name one of them in --configs, or leave --configs out to evaluate them all."
            )
    return [_load_config(path, config, split, limit) for config in configs or available]


def load_benchmark(path: str, config: str, split: str | None = None, limit: int | None = None) -> Benchmark:
    """Reads ``limit`` questions (all by default) of ``config`` / ``split`` with ``datasets.load_dataset``."""
    return load_benchmarks(path, [config], split, limit)[0]


def _load_config(path: str, config: str, split: str | None, limit: int | None) -> Benchmark:
    import datasets

    splits = datasets.get_dataset_split_names(path, config)
    if split is None:
        split = next((name for name in PREFERRED_SPLITS if name in splits), splits[0] if len(splits) == 1 else None)
        if split is None:
            raise UserError(f"benchmark {path} ({config}) has the splits {', '.join(splits)}; choose one with --split.")
    elif split not in splits:
        raise UserError(
            f"benchmark {path} ({config}) has no split {split!r}; its splits are {', '.join(splits)}. "
            f"Choose one with --split."
        )
    # datasets caches a local folder's rows under its config and file patterns, not its contents: another folder of
    # the same name, or this one rewritten, would read the old rows. A local folder is streamed from its files (a Hub
    # dataset's cache is keyed by its commit).
    rows = datasets.load_dataset(path, name=config, split=split, streaming=Path(path).is_dir())
    if limit is not None:
        streamed = isinstance(rows, datasets.IterableDataset)
        rows = rows.take(limit) if streamed else rows.select(range(min(limit, len(rows))))
    # A streamed folder of files without a schema (JSON lines) knows its columns only from a row.
    columns = rows.column_names if rows.column_names is not None else list(next(iter(rows), {}))
    kind = benchmark_format(columns, f"{path} ({config}, {split})")
    benchmark = Benchmark(path, config, split, kind, [])
    for number, row in enumerate(rows):
        names = BLINK_IMAGES if kind == "blink" else ("image",)
        images = [row[name] for name in names if row.get(name) is not None]
        if len(images) != 1:
            reason = "multi-image questions" if images else "questions without an image"
            benchmark.skipped[reason] = benchmark.skipped.get(reason, 0) + 1
            continue
        benchmark.questions.append(_question(kind, row, number, images[0], config, f"{path} ({config}, {split})"))
    return benchmark


def benchmark_format(columns: list[str], where: str) -> str:
    for kind, needed in FORMATS.items():
        if set(needed) <= set(columns):
            return kind
    described = "; ".join(f"{kind}: {', '.join(needed)}" for kind, needed in FORMATS.items())
    raise UserError(
        f"benchmark {where} is in no format theworld reads: its columns are {', '.join(columns)}. The "
        f"formats and the columns they need are {described}. Rename the columns to one of these."
    )


def _question(kind: str, row: dict, number: int, image: Image.Image, config: str, where: str) -> Question:
    question_id = str(row.get("idx", row.get("question_id", number)))
    if kind == "vqa":
        answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
        return Question(question_id, config, None, image, row["question"], [], [str(a) for a in answers])
    choices = list(row["choices"])
    options = option_letters(len(choices))
    answer = row["answer"].strip()
    if answer not in options:
        if answer not in choices:
            raise UserError(
                f"benchmark {where}, question {question_id}: the answer {answer!r} is neither an option "
                f"letter ({', '.join(options)}) nor one of the choices {choices}. Fix that row."
            )
        answer = options[choices.index(answer)]
    # BLINK's tasks are its configs (a sub_task naming the task again is no sub-task); CV-Bench's configs are 2D/3D,
    # its tasks a column, and its published accuracy is averaged over the images' sources.
    if kind == "blink":
        task, sub_task = config, row.get("sub_task")
    else:
        task, sub_task = row.get("task") or config, row.get("source")
    if sub_task and sub_task.replace(" ", "_").lower() == task.replace(" ", "_").lower():
        sub_task = None
    return Question(
        question_id, task, sub_task, image, multiple_choice_prompt(row["question"], choices), options, [answer]
    )


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
