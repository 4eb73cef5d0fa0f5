"""``TrainingProgress``: step, loss, samples/s and ETA while training, on a terminal or in a log."""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info


class TrainingProgress(TQDMProgressBar):
    """Lightning's progress bar on a terminal; in a log file (a SLURM job, ``nohup``, CI) one line every
    ``line_every_n_steps`` steps instead of a bar's carriage-return frames::

        step 300/900 | train/loss 0.4123 | 212.4 samples/s | ETA 0:00:42

    The bar shows the same loss and samples/s (logged by the module) beside Lightning's own rate and ETA.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: theworld.callbacks.TrainingProgress
              init_args:
                refresh_rate: 50        # the bar reads the loss from the GPU at each refresh
    """

    def __init__(self, refresh_rate: int = 1, line_every_n_steps: int = 50, interactive: bool | None = None):
        """
        Args:
            refresh_rate: Steps between refreshes of the bar on a terminal.
            line_every_n_steps: Steps between progress lines when the output is not a terminal.
            interactive: Force the bar (true) or the lines (false); default: a bar when stdout is a terminal.
        """
        super().__init__(refresh_rate=refresh_rate)
        self.line_every_n_steps = line_every_n_steps
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self._clock: tuple[float, int] | None = None  # (time, step) of the previous line

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not self.interactive:
            self.disable()  # the bars stay silent in fit, validate and predict alike; lines instead

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._clock = (time.perf_counter(), trainer.global_step)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        # Lightning's bar shows "v_num"; the run's folder is printed at the start instead.
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.interactive and (
            trainer.global_step % self.line_every_n_steps == 0 or trainer.global_step == trainer.max_steps
        ):
            rank_zero_info(self._line(trainer))

    def _line(self, trainer: L.Trainer) -> str:
        now, step = time.perf_counter(), trainer.global_step
        assert self._clock is not None  # set at the start of training
        seconds_per_step = (now - self._clock[0]) / max(step - self._clock[1], 1)
        self._clock = (now, step)
        parts = [f"step {step}" + (f"/{trainer.max_steps}" if trainer.max_steps > 0 else "")]
        metrics = trainer.callback_metrics
        if "train/loss" in metrics:
            parts.append(f"train/loss {float(metrics['train/loss']):.4f}")
        if "train/samples_per_sec" in metrics:
            parts.append(f"{float(metrics['train/samples_per_sec']):.1f} samples/s")
        if trainer.max_steps > 0:
            parts.append(f"ETA {time.strftime('%H:%M:%S', time.gmtime(seconds_per_step * (trainer.max_steps - step)))}")
        return " | ".join(parts)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self.interactive and not trainer.sanity_checking and "val/loss" in trainer.callback_metrics:
            # `theworld validate` runs no step: the step is the one its weights were trained to
            fitting = trainer.state.fn == "fit"
            step = trainer.global_step if fitting else getattr(pl_module, "weights_step", trainer.global_step)
            rank_zero_info(f"validation at step {step} | val/loss {float(trainer.callback_metrics['val/loss']):.4f}")
