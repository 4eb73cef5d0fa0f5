"""Benchmarks in their published formats, read with ``datasets`` from a Hub id or a local folder laid out like one.

Each format is one record (``theworld.benchmarks.formats.BenchmarkFormat``) in its own file: BLINK
(``blink.py``), CV-Bench (``cv_bench.py``), plain multiple choice (``multiple_choice.py``) and plain VQA
(``vqa.py``); a dataset's columns say which it is. A question with several images (BLINK's multi-image tasks:
``image_1``..``image_4``) is asked with all of them, in order, each with its own world block and Gemma image block;
questions without an image are skipped and counted.

``--limit`` is a seeded sample of each config, stratified by task (CV-Bench's 2D config: Count and Relation in
their proportions). A config repeating the others' rows (CV-Bench's ``default``) is evaluated only when named.

Example:
    >>> benchmark = load_benchmark("BLINK-Benchmark/BLINK", "Relative_Depth", "val")
    >>> benchmark.questions[0].options, benchmark.questions[0].answers
    (['(A)', '(B)'], ['(A)'])
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from theworld.benchmarks.blink import BLINK
from theworld.benchmarks.cv_bench import CV_BENCH
from theworld.benchmarks.formats import FORMATS, BenchmarkFormat, Question, Row, format_of, register_format
from theworld.benchmarks.multiple_choice import MULTIPLE_CHOICE
from theworld.benchmarks.vqa import VQA
from theworld.errors import UserError
from theworld.hub.refs import is_hub_repo_id

for _format in (BLINK, CV_BENCH, MULTIPLE_CHOICE, VQA):
    register_format(_format)

__all__ = [
    "FORMATS",
    "Benchmark",
    "BenchmarkFormat",
    "Question",
    "benchmark_configs",
    "load_benchmark",
    "load_benchmarks",
    "register_format",
    "stratified_sample",
]

# Tried in this order when the split is not given: BLINK publishes val (test answers are hidden), CV-Bench test.
PREFERRED_SPLITS = ("val", "validation", "test")


@dataclass
class Benchmark:
    """The questions of one config and split, with what was left out (``skipped``: reason -> count) and ``notes``
    for the table (a repeated config left out)."""

    dataset: str
    config: str
    split: str
    format: str
    questions: list[Question]
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def record(self) -> BenchmarkFormat:
        return FORMATS[self.format]

    @property
    def answered(self) -> bool:
        """False for a split whose answers are hidden (a test split): predictions only."""
        return all(q.answered for q in self.questions)


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
    path: str, configs: list[str] | None = None, split: str | None = None, limit: int | None = None, seed: int = 0
) -> list[Benchmark]:
    """``configs`` of the benchmark (default: all it has but those repeating the others' rows), each as
    ``load_benchmark`` reads it; the benchmark's configs are asked for once."""
    available = benchmark_configs(path)
    for config in configs or ():
        if config not in available:
            raise UserError(
                f"benchmark {path} has no config {config!r}; its configs are {', '.join(available)}. "
                f"Name one of them in --configs, or leave --configs out to evaluate them all."
            )
    if configs:
        return [_load_config(path, config, split, limit, seed) for config in configs]
    # A config that some format says repeats the others (CV-Bench's default) is read last, and only if the others
    # are not in that format: its questions would be counted twice.
    maybe_repeated = {
        c for c in available if len(available) > 1 and any(c in f.repeated_configs for f in FORMATS.values())
    }
    loaded = {c: _load_config(path, c, split, limit, seed) for c in available if c not in maybe_repeated}
    formats = {b.format for b in loaded.values()}
    for config in maybe_repeated:
        if any(config in FORMATS[name].repeated_configs for name in formats):
            first = next(iter(loaded.values()))
            first.notes.append(
                f"config {config} left out: it repeats {', '.join(loaded)} (name it in --configs to evaluate it)"
            )
        else:
            loaded[config] = _load_config(path, config, split, limit, seed)
    return [loaded[c] for c in available if c in loaded]


def load_benchmark(
    path: str, config: str, split: str | None = None, limit: int | None = None, seed: int = 0
) -> Benchmark:
    """Reads ``config`` / ``split`` with ``datasets.load_dataset``: all its questions, or a seeded sample of
    ``limit`` stratified by task."""
    return load_benchmarks(path, [config], split, limit, seed)[0]


def stratified_sample(rows: Sequence[Row], task: Callable[[Row], str], limit: int, seed: int) -> list[Row]:
    """``limit`` rows drawn without replacement, every task's share as in ``rows`` (largest remainder), each task
    at least one row while ``limit`` allows; in the rows' order. Seeded by ``seed`` and the rows' config."""
    if limit >= len(rows):
        return list(rows)
    by_task: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_task[task(row)].append(row)
    rng = random.Random(f"{seed}:{rows[0].config}")
    tasks = sorted(by_task)
    if limit < len(tasks):
        quotas = dict.fromkeys(rng.sample(tasks, limit), 1)
    else:
        spare = limit - len(tasks)  # one row per task first, the rest in proportion to what is left
        left = {t: len(by_task[t]) - 1 for t in tasks}
        exact = {t: spare * left[t] / max(sum(left.values()), 1) for t in tasks}
        quotas = {t: 1 + int(exact[t]) for t in tasks}
        by_remainder = sorted(tasks, key=lambda t: exact[t] - int(exact[t]), reverse=True)
        for t in by_remainder[: limit - sum(quotas.values())]:
            quotas[t] += 1
    chosen = [row for t, quota in quotas.items() for row in rng.sample(by_task[t], quota)]
    return sorted(chosen, key=lambda row: row.number)


def _load_config(path: str, config: str, split: str | None, limit: int | None, seed: int) -> Benchmark:
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
    # A streamed folder of files without a schema (JSON lines) knows its columns only from a row.
    columns = rows.column_names if rows.column_names is not None else list(next(iter(rows), {}))
    where = f"{path} ({config}, {split})"
    record = format_of(columns, where)
    # Every row is read to sample by task; only the sampled rows' images are decoded.
    for column in record.image_columns:
        if isinstance((rows.features or {}).get(column), datasets.Image):
            rows = rows.cast_column(column, datasets.Image(decode=False))
    benchmark = Benchmark(path, config, split, record.name, [])
    usable = []
    for number, values in enumerate(rows):
        if not _images(values, record):
            reason = "questions without an image"
            benchmark.skipped[reason] = benchmark.skipped.get(reason, 0) + 1
            continue
        usable.append(Row(values, number, config, where))
    chosen = usable if limit is None else stratified_sample(usable, record.task, limit, seed)
    for row in chosen:
        images = _images(row.values, record)
        decoded = [datasets.Image().decode_example(image) if isinstance(image, dict) else image for image in images]
        benchmark.questions.append(record.read(row, decoded))
    return benchmark


def _images(values, record: BenchmarkFormat) -> list:
    """A row's images (still encoded), in the order of the format's image columns."""
    return [values[name] for name in record.image_columns if values.get(name) is not None]


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
