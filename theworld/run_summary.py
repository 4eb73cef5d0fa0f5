"""The record a training run hands to whoever reports on it: the end-of-run line, the model card, the Hub sync.

TheWorldModule keeps it up to date (``TheWorldModule.run_summary()``); readers get a copy and never reach into
the module, the data module or the trainer for these facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from theworld.captions import CaptionSample
from theworld.config import TheWorldConfig


@dataclass(frozen=True)
class ValidationRecord:
    """What one validation found: losses and the held-out caption scores (``exact``, per attribute)."""

    step: int
    samples: int
    train_loss: float | None
    val_loss: float | None
    captions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    """A training run so far (``final``: it has ended).

    ``samples_seen`` counts every device's samples; ``effective_batch`` is per device x devices x accumulation.
    ``train_losses`` are (step, loss) pairs at logging steps, for the loss curve; ``gallery`` holds the latest
    validation's held-out images with their generated and reference captions.
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

    @property
    def train_loss(self) -> float | None:
        return self.train_losses[-1][1] if self.train_losses else None
