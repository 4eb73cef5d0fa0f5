"""The record a training run hands to whoever reports on it: the end-of-run line, the model card, the Hub sync.

TheWorldModule keeps it up to date (``TheWorldModule.run_summary()``); readers get a copy and never reach into
the module, the data module or the trainer for these facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from theworld.captions import CaptionSample
from theworld.config import TheWorldConfig
from theworld.evaluate import EvaluationResult


@dataclass(frozen=True)
class ValidationRecord:
    """What one validation found: losses and the held-out caption scores (``cider``, ``bleu4``; with the demo's
    grammar ``exact`` and one per attribute, as fractions)."""

    step: int
    samples: int
    train_loss: float | None
    val_loss: float | None
    captions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchmarkRecord:
    """A benchmark evaluated during training (``BenchmarkEvaluation``): the step of the weights and what was found."""

    step: int
    result: EvaluationResult


@dataclass(frozen=True)
class RunSummary:
    """A training run so far (``final``: it has ended).

    ``samples_seen`` counts every device's samples; ``effective_batch`` is per device x devices x accumulation.
    ``train_losses`` are (step, loss) pairs at logging steps, for the loss curve; ``gallery`` holds the latest
    validation's held-out images with their generated and reference captions. ``skipped`` counts the records the
    data sources skipped, by reason, and ``samples_trained`` the samples that went into a step (each a provenance
    row; a partial last batch counts what it held), both summed over ranks as last reported. ``provenance_rows``:
    the rows of the pushed checkpoint's provenance (``None``: it has none). ``benchmark``: the latest benchmark
    evaluation, when a ``BenchmarkEvaluation`` callback runs.
    """

    model_config: TheWorldConfig
    dataset: str | None
    step: int
    max_steps: int | None
    epochs: int
    samples_seen: int
    effective_batch: int
    learning_rate: float
    trainable_params: int
    total_params: int
    world_tokens: int
    wall_seconds: float
    final: bool
    train_losses: tuple[tuple[int, float], ...] = ()
    history: tuple[ValidationRecord, ...] = ()
    gallery: tuple[CaptionSample, ...] = ()
    skipped: dict[str, int] = field(default_factory=dict)
    samples_trained: int = 0
    provenance_rows: int | None = None
    benchmark: BenchmarkRecord | None = None

    @property
    def train_loss(self) -> float | None:
        return self.train_losses[-1][1] if self.train_losses else None

    def data_yield(self) -> dict:
        """img2dataset-style yield: of the records read, how many were trained on and how many each reason
        skipped, as counts and rates (``converted_mode`` samples were trained on, converted)."""
        skipped = {reason: n for reason, n in sorted(self.skipped.items()) if reason != "converted_mode"}
        records = self.samples_trained + sum(skipped.values())
        rate = (lambda n: round(n / records, 6)) if records else (lambda n: 0.0)
        return {
            "records": records,
            "trained": self.samples_trained,
            "yield": rate(self.samples_trained),
            "skipped": skipped,
            "skipped_rates": {reason: rate(n) for reason, n in skipped.items()},
            "converted_mode": self.skipped.get("converted_mode", 0),
        }

    def data_yield_line(self) -> str:
        """One sentence: ``data yield 91.2% of 1,000 records (http_error 6.1%, timeout 2.7%)``."""
        figures = self.data_yield()
        reasons = ", ".join(f"{reason} {rate:.1%}" for reason, rate in figures["skipped_rates"].items())
        return f"data yield {figures['yield']:.1%} of {figures['records']:,} records" + (
            f" ({reasons})" if reasons else ""
        )
