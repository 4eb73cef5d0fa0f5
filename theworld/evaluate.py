"""Does the world help? Benchmark accuracy of TheWorld with its world tokens, without them, with another image's,
and of plain Gemma 3, in one table (``theworld evaluate``).

Multiple-choice questions are scored as lm-evaluation-harness does: the summed log-likelihood of each option's tokens
after the prompt, the best option is the answer (no answer parsing). The vocabulary logits are taken only at the
option positions. Open questions are answered by greedy generation and matched after VQA-style normalisation.

Conditions:

- ``full``: the model as trained;
- ``no_world``: the world block left out of the prompt and the model (``TheWorld.without_world``);
- ``shuffled_world``: each question's image gets another question's world tokens (a seeded derangement over the
  benchmark's questions, so it works with any batch size); Gemma's image block keeps the true image;
- ``gemma``: plain Gemma 3 from the same base weights (``enable_world: false``, Gemma's image tokens on), same prompts.

The world gain is ``full - shuffled_world``, with a paired bootstrap interval (the same resampled questions for both).

Example:
    >>> bench = load_benchmark("BLINK-Benchmark/BLINK", "Relative_Depth", "val")
    >>> result = evaluate_benchmarks(model, [bench], baseline=lambda: gemma_baseline(model))
    >>> print(result.table())
    >>> result.save("runs/demo/evaluate/BLINK.json")
"""

from __future__ import annotations

import contextlib
import json
import logging
import string
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from theworld.benchmarks import Benchmark, Question
from theworld.errors import UserError
from theworld.loss import IGNORE_INDEX

log = logging.getLogger(__name__)

CONDITIONS = ("full", "no_world", "shuffled_world", "gemma")
WORLD_CONDITIONS = ("no_world", "shuffled_world")  # ablations of the world tokens: need a model that has them
ALL = "all"  # the task name of the pooled rows (every question of every config)
PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class TaskScore:
    """Where a score was measured: the benchmark (Hub id or folder), config, split and task, over ``n`` questions.

    ``config`` / ``split`` are None on the pooled ``task == "all"`` rows when the configs differ."""

    dataset: str
    config: str | None
    split: str | None
    task: str
    n: int


def task_name(score: TaskScore) -> str:
    """How tables, logs and the card name a task: ``Relative_Depth``, or ``2D/Count`` where a config holds several."""
    return score.task if score.config in (score.task, None) else f"{score.config}/{score.task}"


@dataclass(frozen=True)
class Accuracy(TaskScore):
    """One condition's accuracy on a task (or one of its sub-tasks) with its 95% bootstrap interval ``ci``."""

    sub_task: str | None
    condition: str
    accuracy: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class WorldGain(TaskScore):
    """``full - shuffled_world`` accuracy on a task (or ``all``), with a paired 95% bootstrap interval."""

    gain: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class SampleResult:
    """One question under one condition: what the model chose (an option letter, or its generated answer)."""

    question_id: str
    config: str
    task: str
    sub_task: str | None
    condition: str
    predicted: str
    answer: str
    correct: bool
    scores: list[float] | None = None  # the options' log-likelihoods (multiple choice)


@dataclass
class EvaluationResult:
    """What ``theworld evaluate`` found; ``table()`` prints it, ``save()`` writes it with the per-sample rows."""

    dataset: str
    conditions: list[str]
    accuracies: list[Accuracy]
    world_gains: list[WorldGain]
    samples: list[SampleResult]
    skipped: dict[str, int] = field(default_factory=dict)
    questions_per_second: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvaluationResult:
        """The inverse of ``to_dict`` (a result carried in a checkpoint or read from the JSON file)."""
        return cls(
            **{
                **data,
                "accuracies": [Accuracy(**{**a, "ci": tuple(a["ci"])}) for a in data["accuracies"]],
                "world_gains": [WorldGain(**{**g, "ci": tuple(g["ci"])}) for g in data["world_gains"]],
                "samples": [SampleResult(**s) for s in data["samples"]],
            }
        )

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """For loggers: ``eval/<config>/<condition>`` accuracy per task (``all``: pooled) and
        ``eval/<config>/world_gain``; sub-tasks are left to the JSON file."""
        named = {f"{prefix}{task_name(a)}/{a.condition}": a.accuracy for a in self.accuracies if a.sub_task is None}
        named.update({f"{prefix}{task_name(g)}/world_gain": g.gain for g in self.world_gains})
        return named

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def rows(self) -> list[tuple[str, str | None, dict[str, Accuracy], WorldGain | None]]:
        """The table's rows in order, each task followed by its sub-tasks, the pooled row last: (name, sub-task,
        accuracy by condition, world gain); a sub-task row is named ``"  <sub_task>"`` and has no gain."""
        grouped: dict[tuple, dict[str, Accuracy]] = defaultdict(dict)
        for acc in self.accuracies:
            grouped[(acc.config, acc.task, acc.sub_task)][acc.condition] = acc
        gains = {(gain.config, gain.task): gain for gain in self.world_gains}
        return [
            (
                f"  {sub_task}" if sub_task else task_name(next(iter(by_condition.values()))),
                sub_task,
                by_condition,
                None if sub_task else gains.get((config, task)),
            )
            for (config, task, sub_task), by_condition in grouped.items()
        ]

    def table(self) -> str:
        """Task x condition accuracy in %, with intervals and counts, and the world gain in points."""
        header = ["task", "n", *self.conditions, *(["world gain"] if self.world_gains else [])]
        rows = []
        for name, _, by_condition, gain in self.rows():
            cells = [
                f"{100 * a.accuracy:.1f} [{100 * a.ci[0]:.1f}, {100 * a.ci[1]:.1f}]" if a else "-"
                for a in map(by_condition.get, self.conditions)
            ]
            if self.world_gains:
                cells.append(
                    f"{100 * gain.gain:+.1f} [{100 * gain.ci[0]:+.1f}, {100 * gain.ci[1]:+.1f}]" if gain else "-"
                )
            rows.append([name, str(next(iter(by_condition.values())).n), *cells])
        widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
            for line in [header, *rows]
        ]
        notes = [
            f"{self.dataset}: accuracy % [95% bootstrap interval]; world gain = full - shuffled_world in points "
            f"[paired interval]"
        ]
        notes += [f"skipped {count} {reason}" for reason, count in self.skipped.items()]
        return "\n".join([*notes, *lines])


# ------------------------------------------------------------------------------------------------- scoring
def option_log_likelihoods(
    model, processor, questions: Sequence[Question], world_images: Sequence | None = None
) -> list[torch.Tensor]:
    """Per question, the summed log-probability of each option's tokens after its prompt: one forward for all the
    options of all ``questions``, lm-head logits at the option positions only.

    ``world_images`` (one per question) go into the world slots instead of the questions' own images.
    """
    world_images = world_images or [q.image for q in questions]
    examples = [
        processor(q.image, caption=option, prompt=q.prompt, world_image=world)
        for q, world in zip(questions, world_images, strict=True)
        for option in q.options
    ]
    batch = processor.collate(examples)
    device = model.gemma.lm_head.weight.device
    inputs = {key: value.to(device) for key, value in batch.items() if isinstance(value, torch.Tensor)}
    hidden = model.hidden_states(
        inputs["input_ids"],
        inputs["segment_ids"],
        inputs["attention_mask"],
        inputs.get("pixel_values"),
        inputs.get("world_pixels"),
    )
    # The collate labels each option's tokens and its closing <end_of_turn>: only the option's own tokens count.
    positions, targets = inputs["label_positions"], inputs["label_targets"]
    log_probs = model.gemma.lm_head(hidden.flatten(0, 1).index_select(0, positions)).float().log_softmax(-1)
    scored = (targets != IGNORE_INDEX) & (targets != processor.end_of_turn_id)
    token_scores = log_probs.gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1) * scored
    per_option = token_scores.view(len(examples), -1).sum(1).cpu()
    return list(per_option.split([len(q.options) for q in questions]))


def normalize_answer(text: str) -> str:
    """VQA-style: lowercase, punctuation and articles out, number words as digits, single spaces."""
    text = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    words = [_NUMBERS.get(word, word) for word in text.split() if word not in ("a", "an", "the")]
    return " ".join(words)


_NUMBERS = {
    word: str(number) for number, word in enumerate("zero one two three four five six seven eight nine ten".split())
}


def derangement(count: int, seed: int) -> np.ndarray:
    """``donor[i] != i`` for every i: a seeded random cycle through all ``count`` (>= 2) positions."""
    order = np.random.default_rng(seed).permutation(count)
    donor = np.empty(count, dtype=int)
    donor[order] = np.roll(order, -1)
    return donor


def bootstrap_interval(values: np.ndarray, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values`` (resampled with replacement, seeded)."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    draws = np.random.default_rng(seed).integers(0, len(values), size=(samples, len(values)))
    low, high = np.percentile(values[draws].mean(axis=1), [2.5, 97.5])
    return (float(low), float(high))


# ---------------------------------------------------------------------------------------------- evaluation
def gemma_baseline(model):
    """Plain Gemma 3 from ``model``'s base weights and revision, Gemma's image tokens on, on ``model``'s device."""
    from theworld.model import TheWorld

    baseline = TheWorld.from_config(replace(model.config, enable_world=False, gemma_image_tokens=True))
    return baseline.to(model.gemma.lm_head.weight.device).eval()


def check_conditions(conditions: Sequence[str] | None, has_world: bool, benchmarks: Sequence[Benchmark]) -> list[str]:
    """The conditions to run (default: all four, or ``full`` and ``gemma`` for a model without world tokens); refuses
    the ones that cannot run, before any weight loads."""
    conditions = list(dict.fromkeys(conditions or [c for c in CONDITIONS if has_world or c not in WORLD_CONDITIONS]))
    if not has_world and set(conditions) & set(WORLD_CONDITIONS):
        raise UserError(
            f"--conditions {', '.join(conditions)}: no_world and shuffled_world ablate the world tokens, "
            f"and this model has none (model.enable_world: false). Evaluate full and gemma only."
        )
    if "shuffled_world" in conditions:
        for benchmark in benchmarks:
            if len(benchmark.questions) < 2:
                raise UserError(
                    f"shuffled_world gives each question another question's world tokens, and "
                    f"{benchmark.config} has {len(benchmark.questions)} question(s) to evaluate: raise "
                    f"--limit to 2 or more, or leave shuffled_world out of --conditions."
                )
    return conditions


def evaluate_benchmarks(
    model,
    benchmarks: Sequence[Benchmark],
    conditions: Sequence[str] | None = None,
    baseline: Callable[[], object] | None = None,
    batch_size: int = 8,
    bootstrap_samples: int = 1000,
    seed: int = 0,
    max_new_tokens: int = 16,
) -> EvaluationResult:
    """Answers every question of ``benchmarks`` under each condition (see ``check_conditions``) and summarises
    them. ``baseline`` builds the ``gemma`` model when needed (default: ``gemma_baseline(model)``)."""
    conditions = check_conditions(conditions, model.world_encoder is not None, benchmarks)
    samples: list[SampleResult] = []
    started, answered = time.monotonic(), 0
    for condition in conditions:
        runner = (baseline or (lambda: gemma_baseline(model)))() if condition == "gemma" else model
        for benchmark in benchmarks:
            samples += _answer(runner, benchmark, condition, batch_size, seed, max_new_tokens)
            answered += len(benchmark.questions)
    skipped: dict[str, int] = defaultdict(int)
    for benchmark in benchmarks:
        for reason, count in benchmark.skipped.items():
            skipped[reason] += count
    accuracies, gains = summarise(samples, benchmarks, bootstrap_samples, seed)
    dataset = benchmarks[0].dataset if benchmarks else ""
    return EvaluationResult(
        dataset, conditions, accuracies, gains, samples, dict(skipped), answered / max(time.monotonic() - started, 1e-9)
    )


@torch.inference_mode()
def _answer(
    model, benchmark: Benchmark, condition: str, batch_size: int, seed: int, max_new_tokens: int
) -> list[SampleResult]:
    questions = benchmark.questions
    processor, world_off = model.processor, contextlib.nullcontext()
    world_images = [q.image for q in questions]
    if condition == "no_world":
        processor, world_off = processor.without_world(), model.without_world()
    elif condition == "shuffled_world":
        world_images = [questions[donor].image for donor in derangement(len(questions), seed)]
    results: list[SampleResult] = []
    started = last_report = time.monotonic()
    with world_off:
        for start in range(0, len(questions), batch_size):
            chunk, worlds = questions[start : start + batch_size], world_images[start : start + batch_size]
            if benchmark.format == "vqa":
                results += _generated(model, processor, benchmark, condition, chunk, worlds, max_new_tokens)
            else:
                results += _chosen(model, processor, benchmark, condition, chunk, worlds)
            now = time.monotonic()
            if now - last_report >= PROGRESS_SECONDS or len(results) == len(questions):
                last_report = now
                log.info(
                    "theworld: evaluate %s %s: %d/%d questions, %.2f questions/s",
                    condition,
                    benchmark.config,
                    len(results),
                    len(questions),
                    len(results) / max(now - started, 1e-9),
                )
    return results


def _chosen(model, processor, benchmark, condition, questions, world_images) -> list[SampleResult]:
    scores = option_log_likelihoods(model, processor, questions, world_images)
    results = []
    for question, option_scores in zip(questions, scores, strict=True):
        predicted = question.options[int(option_scores.argmax())]
        results.append(
            SampleResult(
                question.id,
                benchmark.config,
                question.task,
                question.sub_task,
                condition,
                predicted,
                question.answers[0],
                predicted == question.answers[0],
                option_scores.tolist(),
            )
        )
    return results


def _generated(model, processor, benchmark, condition, questions, world_images, max_new_tokens) -> list[SampleResult]:
    examples = [
        processor(q.image, prompt=q.prompt, world_image=world) for q, world in zip(questions, world_images, strict=True)
    ]
    texts = model.generate_from_batch(processor.collate(examples, padding_side="left"), max_new_tokens)
    results = []
    for question, text in zip(questions, texts, strict=True):
        correct = normalize_answer(text) in {normalize_answer(answer) for answer in question.answers}
        results.append(
            SampleResult(
                question.id,
                benchmark.config,
                question.task,
                question.sub_task,
                condition,
                text,
                " | ".join(question.answers),
                correct,
            )
        )
    return results


# ---------------------------------------------------------------------------------------------- summaries
def summarise(
    samples: Sequence[SampleResult], benchmarks: Sequence[Benchmark], bootstrap_samples: int = 1000, seed: int = 0
) -> tuple[list[Accuracy], list[WorldGain]]:
    """Accuracy per task, sub-task and condition (and pooled as ``all``), and the world gain per task and pooled."""
    dataset = benchmarks[0].dataset if benchmarks else ""
    splits = {b.config: b.split for b in benchmarks}
    groups: dict[tuple, dict[str, dict[tuple[str, str], bool]]] = defaultdict(lambda: defaultdict(dict))
    for s in samples:
        for key in [(s.config, s.task, None), (ALL, ALL, None)] + (
            [(s.config, s.task, s.sub_task)] if s.sub_task and s.sub_task != s.task else []
        ):
            groups[key][s.condition][(s.config, s.question_id)] = s.correct
    pooled_split = next(iter(set(splits.values()))) if len(set(splits.values())) == 1 else None
    accuracies, gains = [], []
    # Tasks in order, each followed by its sub-tasks; the pooled row last.
    for config, task, sub_task in sorted(groups, key=lambda k: (k[0] == ALL, k[0], k[1], k[2] or "")):
        by_condition = groups[(config, task, sub_task)]
        config_name = None if config == ALL else config
        split = pooled_split if config == ALL else splits.get(config)
        for condition, correct in by_condition.items():
            values = np.array(list(correct.values()), dtype=float)
            accuracies.append(
                Accuracy(
                    dataset,
                    config_name,
                    split,
                    task,
                    len(values),
                    sub_task,
                    condition,
                    float(values.mean()),
                    bootstrap_interval(values, bootstrap_samples, seed),
                )
            )
        if sub_task is None and {"full", "shuffled_world"} <= set(by_condition):
            full, shuffled = by_condition["full"], by_condition["shuffled_world"]
            paired = np.array([float(full[k]) - float(shuffled[k]) for k in full if k in shuffled])
            gains.append(
                WorldGain(
                    dataset,
                    config_name,
                    split,
                    task,
                    len(paired),
                    float(paired.mean()),
                    bootstrap_interval(paired, bootstrap_samples, seed),
                )
            )
    return accuracies, gains
