"""``TrainingProgress``: step, loss, samples/s and ETA while training, on a terminal or in a log."""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info


class TrainingProgress(TQDMProgressBar):
    """Lightning's progress bar on a terminal; in a log file (a SLURM job, ``nohup``, CI) lines instead of a bar's
    carriage-return frames: one after the first step (so a run shows it is alive at once), then one every
    ``line_every_n_steps`` steps::

        step 1/900 | train/loss 2.3117 | first step 4.2 s
        step 300/900 | train/loss 0.4123 | 212.4 samples/s | ETA 00:00:42

    The ETA is the time per step since the end of the first step (see :class:`StepRate`), so it holds steady.

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
        self._started = 0.0  # time.perf_counter() at the start of training
        self._step = 0  # the optimizer step the previous batch ended at (accumulated batches end without one)
        self._rate = StepRate()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not self.interactive:
            self.disable()  # the bars stay silent in fit, validate and predict alike; lines instead

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._started, self._step = time.perf_counter(), trainer.global_step
        self._rate = StepRate()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        # Lightning's bar shows "v_num"; the run's folder is printed at the start instead.
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step = trainer.global_step
        if self.interactive or step == self._step:
            return
        self._step = step
        seconds_per_step = self._rate.update(time.perf_counter(), step)
        if seconds_per_step is None or step % self.line_every_n_steps == 0 or step == trainer.max_steps:
            rank_zero_info(self._line(trainer, seconds_per_step))

    def _line(self, trainer: L.Trainer, seconds_per_step: float | None) -> str:
        step = trainer.global_step
        parts = [f"step {step}" + (f"/{trainer.max_steps}" if trainer.max_steps > 0 else "")]
        metrics = trainer.callback_metrics
        if "train/loss" in metrics:
            parts.append(f"train/loss {float(metrics['train/loss']):.4f}")
        if "train/samples_per_sec" in metrics:
            parts.append(f"{float(metrics['train/samples_per_sec']):.1f} samples/s")
        if seconds_per_step is None:
            parts.append(f"first step {time.perf_counter() - self._started:.1f} s")
        elif trainer.max_steps > 0:
            parts.append(f"ETA {time.strftime('%H:%M:%S', time.gmtime(seconds_per_step * (trainer.max_steps - step)))}")
        return " | ".join(parts)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self.interactive and not trainer.sanity_checking and "val/loss" in trainer.callback_metrics:
            # `theworld validate` runs no step: the step is the one its weights were trained to
            fitting = trainer.state.fn == "fit"
            step = trainer.global_step if fitting else getattr(pl_module, "weights_step", trainer.global_step)
            rank_zero_info(f"validation at step {step} | val/loss {float(trainer.callback_metrics['val/loss']):.4f}")


class StepRate:
    """Seconds per optimizer step, averaged from the end of the first step this process trains to now.

    The first step pays for the warm-up (loader workers starting, the first batches decoded, kernels chosen), often
    many steps' worth: an ETA from it, or from a short window after it, swings from far too long to about right. The
    average since then also spreads validation pauses over the steps, as they will recur until the end."""

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None  # (time, step) at the end of the first step

    def update(self, now: float, step: int) -> float | None:
        """Records that ``step`` ended at ``now``; None at the first step (nothing to average yet)."""
        if self._first is None:
            self._first = (now, step)
            return None
        first_time, first_step = self._first
        return (now - first_time) / max(step - first_step, 1)
