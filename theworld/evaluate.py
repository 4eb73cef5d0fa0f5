"""Does the world help? Benchmark accuracy of TheWorld with its world tokens, without them, with another image's,
and of plain Gemma 3, in one table (``theworld evaluate``).

Protocols (named in every table, JSON file, card and logged metric):

- ``official`` (the default): as the benchmark's published evaluation does it (its format record,
  ``theworld.benchmarks``): the dataset's own prompt, a greedily generated answer, the answer read as the benchmark
  reads it (BLINK and CV-Bench: the leading option letter, as lmms-eval), and the official total (BLINK: the mean
  of its task accuracies; CV-Bench: 1/2 ((ADE20K + COCO) / 2 + Omni3D)).
- ``loglikelihood``: multiple choice scored as lm-evaluation-harness does, the summed log-likelihood of each
  option's tokens after the prompt, the best option is the answer (open questions are generated as above).

Conditions:

- ``full``: the model as trained;
- ``no_world``: the world block left out of the prompt and the model (``TheWorld.without_world``);
- ``shuffled_world``: each question's image gets another question's world tokens (a seeded derangement over all the
  questions evaluated, so it works with any batch size and any task size); Gemma's image block keeps the true image.
  A question of several images takes its donor's world images in order, repeated where the donor has fewer;
- ``gemma``: plain Gemma 3 from the same base weights (``enable_world: false``, Gemma's image tokens on), same prompts;
- ``baseline``: a trained control, another checkpoint's trainable weights in the same model (``--baseline``), with
  the gain ``full - baseline`` beside the world gain.

Accuracies come with 95% Wilson score intervals (they do not collapse at 0% or 100%); the world gain,
``full - shuffled_world``, with a 95% paired bootstrap interval (10,000 resamples of the same questions for both),
resampled within each stratum of the official total. A split whose answers are hidden (a test split) gives
predictions only: no accuracy, and the submission its server takes (``EvaluationResult.submission``).

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
import math
import string
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from theworld.benchmarks import FORMATS, Benchmark, Question
from theworld.errors import UserError

log = logging.getLogger(__name__)

CONDITIONS = ("full", "no_world", "shuffled_world", "gemma", "baseline")
# What the world gain is measured against: the world ablated (another image's tokens), and a trained control.
GAIN_REFERENCES = {"shuffled_world": "world_gain", "baseline": "gain_vs_baseline"}
WORLD_CONDITIONS = ("no_world", "shuffled_world")  # ablations of the world tokens: need a model that has them
PROTOCOLS = ("official", "loglikelihood")
ALL = "all"  # the task name of the official total's rows (every config of the benchmark)
PROGRESS_SECONDS = 10.0
BOOTSTRAP_SAMPLES = 10_000
Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile


@dataclass(frozen=True)
class TaskScore:
    """Where a score was measured: the benchmark (Hub id or folder), config, split and task, over ``n`` questions.

    ``config`` / ``split`` are None on the official total's ``task == "all"`` rows when the configs differ."""

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
    """One condition's accuracy on a task (or one of its sub-tasks) with its 95% Wilson interval ``ci``."""

    sub_task: str | None
    condition: str
    accuracy: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class WorldGain(TaskScore):
    """``full - <against>`` accuracy on a task (or ``all``), with a paired 95% bootstrap interval: the world gain
    (against ``shuffled_world``), or the gain over a trained control (against ``baseline``)."""

    gain: float
    ci: tuple[float, float]
    against: str = "shuffled_world"


@dataclass(frozen=True)
class SampleResult:
    """One question under one condition: the answer read from the model (an option letter, or its generated
    answer), whether it is right (None: the split hides its answers), and what it was read from."""

    question_id: str
    config: str
    task: str
    sub_task: str | None
    condition: str
    predicted: str
    answer: str
    correct: bool | None
    scores: list[float] | None = None  # the options' log-likelihoods (loglikelihood protocol)
    response: str | None = None  # the generated text (official protocol)
    stratum: str = ALL  # the group the official total averages over
    prompt: str = ""  # what the model was asked


@dataclass
class EvaluationResult:
    """What ``theworld evaluate`` found; ``table()`` prints it, ``save()`` writes it with the per-sample rows.

    ``protocol`` / ``protocol_description`` / ``total_rule`` say how it was measured, ``bootstrap_samples`` and
    ``seed`` how its intervals (and the ``--limit`` sample) were drawn, ``step`` and ``models`` which weights
    answered (the trained weights' step; each condition's base models with their revisions); ``empty_tasks`` are
    configs with no usable question (config -> why), ``predictions_only`` the configs whose answers are hidden."""

    dataset: str
    conditions: list[str]
    accuracies: list[Accuracy]
    world_gains: list[WorldGain]
    samples: list[SampleResult]
    skipped: dict[str, int] = field(default_factory=dict)
    questions_per_second: float = 0.0
    protocol: str = "official"
    protocol_description: str = ""
    total_rule: str = ""
    format: str = "blink"
    bootstrap_samples: int = BOOTSTRAP_SAMPLES
    seed: int = 0
    empty_tasks: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    predictions_only: list[str] = field(default_factory=list)
    step: int | None = None
    models: dict[str, str] = field(default_factory=dict)

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
        """For loggers: ``eval/<protocol>/<task>/<condition>`` accuracy per task (``all``: the official total) and
        ``eval/<protocol>/<task>/world_gain`` (and ``gain_vs_baseline``); sub-tasks are left to the JSON file."""
        prefix = f"{prefix}{self.protocol}/"
        named = {f"{prefix}{task_name(a)}/{a.condition}": a.accuracy for a in self.accuracies if a.sub_task is None}
        named.update({f"{prefix}{task_name(g)}/{GAIN_REFERENCES[g.against]}": g.gain for g in self.world_gains})
        return named

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def submission(self) -> str | None:
        """The file the benchmark's server takes for the questions whose answers are hidden (the ``full``
        condition's answers, or the first condition's), None when every answer is known."""
        condition = "full" if "full" in self.conditions else self.conditions[0]
        predictions = {
            s.question_id: s.predicted for s in self.samples if s.correct is None and s.condition == condition
        }
        return FORMATS[self.format].submission(predictions) if predictions else None

    def rows(self) -> list[tuple[str, str | None, dict[str, Accuracy], dict[str, WorldGain]]]:
        """The table's rows in order, each task followed by its sub-tasks, the total last: (name, sub-task,
        accuracy by condition, gains by what they are against); a sub-task row is named ``"  <sub_task>"`` and has
        no gain."""
        grouped: dict[tuple, dict[str, Accuracy]] = defaultdict(dict)
        for acc in self.accuracies:
            grouped[(acc.config, acc.task, acc.sub_task)][acc.condition] = acc
        gains: dict[tuple, dict[str, WorldGain]] = defaultdict(dict)
        for gain in self.world_gains:
            gains[(gain.config, gain.task)][gain.against] = gain
        return [
            (
                f"  {sub_task}" if sub_task else task_name(next(iter(by_condition.values()))),
                sub_task,
                by_condition,
                {} if sub_task else gains.get((config, task), {}),
            )
            for (config, task, sub_task), by_condition in grouped.items()
        ]

    def table(self) -> str:
        """Task x condition accuracy in %, with intervals and counts, and the world gain in points; the footer
        names the protocol, the total and the interval methods."""
        against = [reference for reference in GAIN_REFERENCES if any(g.against == reference for g in self.world_gains)]
        header = ["task", "n", *self.conditions, *(GAIN_REFERENCES[reference] for reference in against)]
        rows = []
        for name, _, by_condition, gains in self.rows():
            cells = [
                f"{100 * a.accuracy:.1f} [{100 * a.ci[0]:.1f}, {100 * a.ci[1]:.1f}]" if a else "-"
                for a in map(by_condition.get, self.conditions)
            ]
            cells += [
                f"{100 * g.gain:+.1f} [{100 * g.ci[0]:+.1f}, {100 * g.ci[1]:+.1f}]" if g else "-"
                for g in map(gains.get, against)
            ]
            rows.append([name, str(next(iter(by_condition.values())).n), *cells])
        widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
            for line in [header, *rows]
        ]
        footer = [
            f"protocol {self.protocol}: {self.protocol_description}",
            f"all: {self.total_rule}",
            f"accuracy % [95% Wilson score interval; all: Wilson at the total's effective sample size (Kish)]; "
            f"world_gain = full - shuffled_world (gain_vs_baseline = full - baseline) in points [95% paired "
            f"bootstrap, {self.bootstrap_samples:,} resamples, seed {self.seed}; all: resampled within each stratum "
            f"of the total]",
        ]
        footer += [f"skipped {count} {reason}" for reason, count in self.skipped.items()]
        footer += [f"{config}: {why}" for config, why in self.empty_tasks.items()]
        footer += self.notes
        if self.predictions_only:
            footer.append(
                f"{', '.join(self.predictions_only)}: answers hidden (a test split): predictions only, no accuracy"
            )
        return "\n".join([self.dataset, *lines, *footer])


# ------------------------------------------------------------------------------------------------- scoring
def option_log_likelihoods(
    model, processor, questions: Sequence[Question], world_images: Sequence | None = None
) -> list[torch.Tensor]:
    """Per question, the summed log-probability of each option's tokens after its prompt.

    Each question's prompt (each of its images once through the world and image encoders) goes through the model
    once, in one left-padded batch; its KV cache is then shared by its options, which run as one short continuation
    batch. An option costs its own few tokens, not the prompt again. ``world_images`` (per question, one per image)
    go into the world slots instead of the questions' own images.
    """
    world_images = world_images or [q.images for q in questions]
    prompts = [
        processor(q.images, prompt=q.prompt, world_image=w) for q, w in zip(questions, world_images, strict=True)
    ]
    hidden, cache, attention_mask, position_ids = model.prefill(processor.collate(prompts, padding_side="left"))
    device = attention_mask.device
    options = [
        (number, processor.tokenizer(option, add_special_tokens=False)["input_ids"])
        for number, question in enumerate(questions)
        for option in question.options
    ]
    width = max(len(ids) for _, ids in options)
    tokens = torch.full((len(options), width), processor.pad_id, dtype=torch.long, device=device)
    real = torch.zeros((len(options), width), dtype=torch.bool, device=device)
    for row, (_, ids) in enumerate(options):
        tokens[row, : len(ids)], real[row, : len(ids)] = torch.tensor(ids, device=device), True
    owner = torch.tensor([number for number, _ in options], device=device)
    cache.batch_select_indices(owner)  # each option row continues its own question's prompt
    extended = model.extend(
        tokens,
        torch.cat([attention_mask[owner], real.long()], dim=-1),
        position_ids[owner, -1:] + 1 + torch.arange(width, device=device),
        cache,
    )
    # The prompt's last state predicts an option's first token, the option's token i its token i + 1.
    predicting = torch.cat([hidden[owner, -1:], extended[:, :-1]], dim=1)
    log_probs = model.gemma.lm_head(predicting[real]).float().log_softmax(-1)
    token_scores = torch.zeros_like(tokens, dtype=torch.float)
    token_scores[real] = log_probs.gather(1, tokens[real].unsqueeze(1)).squeeze(1)
    per_option = token_scores.sum(1).cpu()
    return list(per_option.split([len(q.options) for q in questions]))


def normalize_answer(text: str) -> str:
    """VQA-style: lowercase, punctuation and articles out, number words as digits, single spaces."""
    text = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    words = [_NUMBERS.get(word, word) for word in text.split() if word not in ("a", "an", "the")]
    return " ".join(words)


_NUMBERS = {
    word: str(number) for number, word in enumerate("zero one two three four five six seven eight nine ten".split())
}


def lent_worlds(donor: Sequence, count: int) -> list:
    """The world images of a question of ``count`` images under ``shuffled_world``: its donor question's images in
    order, repeated where the donor has fewer (every world block carries another question's image)."""
    return [donor[number % len(donor)] for number in range(count)]


def derangement(count: int, seed: int) -> np.ndarray:
    """``donor[i] != i`` for every i: a seeded random cycle through all ``count`` (>= 2) positions."""
    order = np.random.default_rng(seed).permutation(count)
    donor = np.empty(count, dtype=int)
    donor[order] = np.roll(order, -1)
    return donor


def wilson_interval(accuracy: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy over ``n`` questions (``n`` may be an effective, fractional size):
    inside [0, 1], and of non-zero width at 0% and 100%."""
    if n <= 0:
        return (float("nan"), float("nan"))
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_bootstrap_interval(
    strata: Sequence[np.ndarray], weights: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``sum(weight * mean(values))`` over strata, each stratum's paired
    differences resampled with replacement on their own (seeded). Resampling ``n`` values is drawing how many times
    each distinct value comes: one multinomial draw per resample, not ``n`` indices."""
    if not strata or any(len(values) == 0 for values in strata):
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    totals = np.zeros(samples)
    for values, weight in zip(strata, weights, strict=True):
        distinct, counts = np.unique(values, return_counts=True)
        draws = rng.multinomial(len(values), counts / len(values), size=samples)
        totals += weight * (draws @ distinct) / len(values)
    low, high = np.percentile(totals, [2.5, 97.5])
    return (float(low), float(high))


# ---------------------------------------------------------------------------------------------- evaluation
def gemma_baseline(model):
    """Plain Gemma 3 from ``model``'s base weights and revision, Gemma's image tokens on, on ``model``'s device."""
    from theworld.model import TheWorld

    baseline = TheWorld.from_config(replace(model.config, enable_world=False, gemma_image_tokens=True))
    return baseline.to(model.gemma.lm_head.weight.device).eval()


def check_conditions(
    conditions: Sequence[str] | None, has_world: bool, benchmarks: Sequence[Benchmark], has_control: bool = False
) -> list[str]:
    """The conditions to run (default: full, no_world, shuffled_world and gemma, or full and gemma for a model without
    world tokens, and baseline when a control checkpoint is given); refuses the ones that cannot run, before any
    weight loads."""
    default = [c for c in CONDITIONS if (has_world or c not in WORLD_CONDITIONS) and (has_control or c != "baseline")]
    conditions = list(dict.fromkeys(conditions or default))
    if "baseline" in conditions and not has_control:
        raise UserError(
            "--conditions baseline: the baseline is a trained control checkpoint, and none was given. Name its "
            "folder with --baseline <checkpoint-N/ or final/>, or leave baseline out of --conditions."
        )
    if not has_world and set(conditions) & set(WORLD_CONDITIONS):
        raise UserError(
            f"--conditions {', '.join(conditions)}: no_world and shuffled_world ablate the world tokens, "
            f"and this model has none (model.enable_world: false). Evaluate full and gemma only."
        )
    count = sum(len(b.questions) for b in benchmarks)
    if "shuffled_world" in conditions and count < 2:
        raise UserError(
            f"shuffled_world gives each question another question's world tokens, and there are {count} "
            f"question(s) to evaluate in all: raise --limit to 2 or more, or leave shuffled_world out of --conditions."
        )
    return conditions


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol}: choose one of {', '.join(PROTOCOLS)}.")
    return protocol


def evaluate_benchmarks(
    model,
    benchmarks: Sequence[Benchmark],
    conditions: Sequence[str] | None = None,
    baseline: Callable[[], object] | None = None,
    batch_size: int = 8,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    max_new_tokens: int = 16,
    protocol: str = "official",
    step: int | None = None,
    control: str | None = None,
) -> EvaluationResult:
    """Answers every question of ``benchmarks`` (configs of one benchmark) under each condition (see
    ``check_conditions``) and ``protocol``, and summarises them. ``baseline`` builds the ``gemma`` model when needed
    (default: ``gemma_baseline(model)``); ``control`` is the checkpoint folder the ``baseline`` condition loads;
    ``step`` is the trained weights' step, recorded with the result."""
    conditions = check_conditions(conditions, model.world_encoder is not None, benchmarks, control is not None)
    protocol = check_protocol(protocol)
    # shuffled_world: the donors are drawn over every question of every config, so a task of one question has some.
    images = [q.images for b in benchmarks for q in b.questions]
    donors = derangement(len(images), seed) if "shuffled_world" in conditions else np.arange(len(images))
    samples: list[SampleResult] = []
    models = {"TheWorld": base_models(model)}
    started, answered = time.monotonic(), 0
    for condition in conditions:
        runner = (baseline or (lambda: gemma_baseline(model)))() if condition == "gemma" else model
        if condition == "gemma":
            models["gemma"] = base_models(runner)
        weights: contextlib.AbstractContextManager = contextlib.nullcontext()
        if condition == "baseline":
            assert control is not None  # check_conditions refuses baseline without it
            models["baseline"] = f"{control} on {models['TheWorld']}"
            weights = control_weights(model, control)
        first = 0
        with weights:
            for benchmark in benchmarks:
                count = len(benchmark.questions)
                lenders = donors[first : first + count]
                worlds = (
                    [lent_worlds(images[d], len(q.images)) for d, q in zip(lenders, benchmark.questions, strict=True)]
                    if condition == "shuffled_world"
                    else None
                )
                samples += _answer(runner, benchmark, condition, worlds, batch_size, max_new_tokens, protocol)
                first, answered = first + count, answered + count
    skipped: dict[str, int] = defaultdict(int)
    for benchmark in benchmarks:
        for reason, count in benchmark.skipped.items():
            skipped[reason] += count
    empty = {
        b.config: "no usable question"
        + (f" ({', '.join(f'{count} {reason}' for reason, count in b.skipped.items())})" if b.skipped else "")
        for b in benchmarks
        if not b.questions
    }
    accuracies, gains = summarise(samples, benchmarks, bootstrap_samples, seed)
    record = benchmarks[0].record if benchmarks else FORMATS["blink"]
    description = (
        record.protocol
        if protocol == "official"
        else ("the prompt, each option's summed log-likelihood, the likeliest option (lm-evaluation-harness)")
    )
    return EvaluationResult(
        benchmarks[0].dataset if benchmarks else "",
        conditions,
        accuracies,
        gains,
        samples,
        dict(skipped),
        answered / max(time.monotonic() - started, 1e-9),
        protocol=protocol,
        protocol_description=description,
        total_rule=record.total_rule,
        format=record.name,
        bootstrap_samples=bootstrap_samples,
        seed=seed,
        empty_tasks=empty,
        notes=[note for b in benchmarks for note in b.notes],
        predictions_only=[b.config for b in benchmarks if b.questions and not b.answered],
        step=step,
        models=models,
    )


@contextlib.contextmanager
def control_weights(model, folder: str):
    """``model`` with the trainable weights of the checkpoint ``folder`` (every one of them: a control shares
    nothing with the model evaluated), its own put back after."""
    from theworld.checkpoint import load_trainable_weights

    own = {name: tensor.detach().clone() for name, tensor in model.trainable_state_dict().items()}
    try:
        load_trainable_weights(model, folder, strict=True)
        yield model
    finally:
        model.load_state_dict(own, strict=False)


def base_models(model) -> str:
    """``model``'s base weights as ``<gemma>@<revision>`` (and its Cosmos VAE's, when it has world tokens)."""
    config = model.config
    named = [f"{config.gemma_model_name}@{config.gemma_revision or 'unrecorded'}"]
    if model.world_encoder is not None:
        named.append(f"{config.cosmos_model_name}@{config.cosmos_revision or 'unrecorded'}")
    return " + ".join(named)


@torch.inference_mode()
def _answer(
    model,
    benchmark: Benchmark,
    condition: str,
    world_images: list | None,
    batch_size: int,
    max_new_tokens: int,
    protocol: str,
) -> list[SampleResult]:
    questions = benchmark.questions
    processor, world_off = model.processor, contextlib.nullcontext()
    world_images = world_images or [q.images for q in questions]
    if condition == "no_world":
        processor, world_off = processor.without_world(), model.without_world()
    results: list[SampleResult] = []
    started = last_report = time.monotonic()
    with world_off:
        for start in range(0, len(questions), batch_size):
            chunk, worlds = questions[start : start + batch_size], world_images[start : start + batch_size]
            if protocol == "loglikelihood" and all(q.multiple_choice for q in chunk):
                results += _chosen(model, processor, benchmark, condition, chunk, worlds)
            else:
                results += _generated(model, processor, benchmark, condition, chunk, worlds, max_new_tokens)
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


def _judged(benchmark: Benchmark, condition: str, question: Question, predicted: str, **read_from) -> SampleResult:
    """``predicted`` scored against the question's answers (None where the split hides them)."""
    if not question.answered:
        correct = None
    elif question.multiple_choice:
        correct = predicted == question.answers[0]
    else:
        correct = normalize_answer(predicted) in {normalize_answer(answer) for answer in question.answers}
    return SampleResult(
        question.id,
        benchmark.config,
        question.task,
        question.sub_task,
        condition,
        predicted,
        " | ".join(question.answers),
        correct,
        stratum=question.stratum,
        prompt=question.prompt,
        **read_from,
    )


def _chosen(model, processor, benchmark, condition, questions, world_images) -> list[SampleResult]:
    scores = option_log_likelihoods(model, processor, questions, world_images)
    return [
        _judged(
            benchmark, condition, question, question.options[int(option_scores.argmax())], scores=option_scores.tolist()
        )
        for question, option_scores in zip(questions, scores, strict=True)
    ]


def _generated(model, processor, benchmark, condition, questions, world_images, max_new_tokens) -> list[SampleResult]:
    examples = [
        processor(q.images, prompt=q.prompt, world_image=world)
        for q, world in zip(questions, world_images, strict=True)
    ]
    batch = processor.collate(examples, padding_side="left")
    texts = model.generate_from_batch(batch, max_new_tokens, answered=benchmark.record.answered)
    return [
        _judged(benchmark, condition, question, benchmark.record.extract_answer(text, question), response=text)
        for question, text in zip(questions, texts, strict=True)
    ]


# ---------------------------------------------------------------------------------------------- summaries
def summarise(
    samples: Sequence[SampleResult],
    benchmarks: Sequence[Benchmark],
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> tuple[list[Accuracy], list[WorldGain]]:
    """Accuracy per task, sub-task and condition, and the official total as ``all``; the world gain per task and of
    the total. Questions whose answers are hidden are left out (predictions only)."""
    dataset = benchmarks[0].dataset if benchmarks else ""
    weights_of = FORMATS[benchmarks[0].format].total_weights if benchmarks else None
    splits = {b.config: b.split for b in benchmarks}
    # (config, task, sub_task) -> condition -> (config, question id) -> right?
    groups: dict[tuple, dict[str, dict[tuple[str, str], bool]]] = defaultdict(lambda: defaultdict(dict))
    by_stratum: dict[str, dict[str, dict[tuple[str, str], bool]]] = defaultdict(lambda: defaultdict(dict))
    for s in samples:
        if s.correct is None:
            continue
        key = (s.config, s.question_id)
        for group in [(s.config, s.task, None)] + (
            [(s.config, s.task, s.sub_task)] if s.sub_task and s.sub_task != s.task else []
        ):
            groups[group][s.condition][key] = s.correct
        by_stratum[s.stratum][s.condition][key] = s.correct
    accuracies, gains = [], []
    # Tasks in order, each followed by its sub-tasks.
    for config, task, sub_task in sorted(groups, key=lambda k: (k[0], k[1], k[2] or "")):
        by_condition = groups[(config, task, sub_task)]
        for condition, correct in by_condition.items():
            accuracy = sum(correct.values()) / len(correct)
            accuracies.append(
                Accuracy(
                    dataset,
                    config,
                    splits.get(config),
                    task,
                    len(correct),
                    sub_task,
                    condition,
                    accuracy,
                    wilson_interval(accuracy, len(correct)),
                )
            )
        for reference in GAIN_REFERENCES:
            if sub_task is None and {"full", reference} <= set(by_condition):
                paired = _paired(by_condition["full"], by_condition[reference])
                gains.append(
                    WorldGain(
                        dataset,
                        config,
                        splits.get(config),
                        task,
                        len(paired),
                        float(paired.mean()),
                        paired_bootstrap_interval([paired], [1.0], bootstrap_samples, seed),
                        reference,
                    )
                )
    if not by_stratum or weights_of is None:
        return accuracies, gains
    # The official total: a weighted mean over strata (BLINK: tasks, equal weights; CV-Bench: the images' sources).
    strata = sorted(by_stratum)
    weights = weights_of(strata)
    answered_splits = {splits.get(config) for (config, _, _) in groups}
    config, split = None, next(iter(answered_splits)) if len(answered_splits) == 1 else None
    conditions = dict.fromkeys(c for stratum in strata for c in by_stratum[stratum])
    for condition in conditions:
        parts = [by_stratum[stratum].get(condition, {}) for stratum in strata]
        if any(not part for part in parts):
            continue
        accuracy = sum(weights[st] * sum(part.values()) / len(part) for st, part in zip(strata, parts, strict=True))
        effective_n = 1 / sum(weights[st] ** 2 / len(part) for st, part in zip(strata, parts, strict=True))
        accuracies.append(
            Accuracy(
                dataset,
                config,
                split,
                ALL,
                sum(len(part) for part in parts),
                None,
                condition,
                accuracy,
                wilson_interval(accuracy, effective_n),
            )
        )
    stratum_weights = [weights[st] for st in strata]
    for reference in GAIN_REFERENCES:
        if {"full", reference} <= set(conditions):
            paired_strata = [_paired(by_stratum[st]["full"], by_stratum[st][reference]) for st in strata]
            gains.append(
                WorldGain(
                    dataset,
                    config,
                    split,
                    ALL,
                    sum(len(p) for p in paired_strata),
                    float(sum(w * p.mean() for w, p in zip(stratum_weights, paired_strata, strict=True))),
                    paired_bootstrap_interval(paired_strata, stratum_weights, bootstrap_samples, seed),
                    reference,
                )
            )
    return accuracies, gains


def _paired(full: dict[tuple[str, str], bool], reference: dict[tuple[str, str], bool]) -> np.ndarray:
    """Per question answered under both: right as the model is (1) minus right under the reference (1)."""
    return np.array([float(full[key]) - float(reference[key]) for key in full if key in reference])
