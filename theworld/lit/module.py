"""TheWorldModule: the LightningModule that trains TheWorld's trainable parameters."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from pathlib import Path
from typing import cast

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.optim.lr_scheduler import LRScheduler

from theworld import lightning_private
from theworld.captions import CaptionSample, CaptionScores, score_captions
from theworld.config import TheWorldConfig
from theworld.data.decode import SKIP_REASONS
from theworld.evaluate import EvaluationResult
from theworld.hub.report import DATA_YIELD_NAME, GALLERY_SIZE, data_yield_json
from theworld.layout import WEIGHTS_NAME
from theworld.model import TheWorld
from theworld.provenance import KEY_KINDS, PROVENANCE_KEY, TrainedSamples, with_key_kinds
from theworld.run_summary import BenchmarkRecord, RunSummary, ValidationRecord

# Checkpoint key of the per-rank loader states (index = global rank) of a multi-process run.
DATA_POSITIONS = "data_positions"


def warmup_cosine(step: int, warmup_steps: int, total_steps: int | None, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``total_steps``
    (constant after warmup when ``total_steps`` is None)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps is None:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TheWorldModule(L.LightningModule):
    """Trains TheWorld with AdamW over the trainable parameters only.

    Every ``TheWorldConfig`` field is an option of this module too (``--model.freeze_gemma_language false``
    on the command line); their defaults live in ``TheWorldConfig`` alone. Weights load in
    ``configure_model``, after callbacks' ``setup`` (so the Hub preflight fails fast, before gigabytes are read).

    Example:
        >>> module = TheWorldModule(gemma_model_name="google/gemma-3-4b-it", learning_rate=1e-4)
        >>> L.Trainer(max_steps=100).fit(module, datamodule=TheWorldDataModule(...))
    """

    def __init__(
        self,
        *,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        max_new_tokens: int = 32,
        val_captions: int = 16,
        compile: bool = False,
        init_from: str | None = None,
        **model_options,
    ):
        """
        Args:
            learning_rate: Peak AdamW learning rate, reached after ``warmup_steps``.
            weight_decay: AdamW weight decay of trainable matrices (norms and biases get none).
            betas: AdamW betas.
            warmup_steps: Steps of linear warmup; then a cosine decay over the rest of ``trainer.max_steps``.
            min_lr_ratio: Where the cosine decay ends, as a fraction of ``learning_rate``.
            max_new_tokens: Longest caption ``predict`` and the held-out caption check generate.
            val_captions: Held-out images captioned at each validation: their CIDEr and BLEU-4 (and, for the demo's
                captions, the share of exact and per-attribute matches) are logged as ``val/caption_*`` and
                printed. 0 turns it off.
            compile: ``torch.compile`` Gemma's decoder layers in place (checkpoint keys do not change).
            init_from: Trainable weights to start from (a checkpoint folder or ``hf://user/repo[@rev][/folder]``),
                weights only: a new training stage with fresh optimizer, schedule and data position.
            model_options: The model's settings: every field of ``TheWorldConfig``.
        """
        super().__init__()
        self.save_hyperparameters()
        self.world_config = TheWorldConfig(**model_options)
        self.model: TheWorld | None = None
        self._trainable_keys: set[str] | None = None  # set in configure_model, with _decay_groups
        self.skipped_samples: Counter[str] = Counter()
        self.samples_trained = 0  # on this rank (with a resumed run's earlier total on rank 0)
        self.key_kinds: set[str] = set()  # what the trained samples' keys are (theworld.provenance.KEY_KINDS)
        # The last totals over ranks: what the run summary shows.
        self._skipped_reported: dict[str, int] = {}
        self._trained_reported = 0
        self.caption_samples: list[CaptionSample] = []  # this validation's, on this rank
        self.caption_scores: CaptionScores | None = None  # the latest validation's
        # For the run summary; carried in checkpoints, so a resumed run reports the whole run.
        self._train_losses: list[tuple[int, float]] = []
        self._history: list[ValidationRecord] = []
        self._revalidating_step: int | None = None  # the resume step, validated again before training goes on
        self._gallery: list[CaptionSample] = []
        self.benchmark: BenchmarkRecord | None = None  # handed over by a BenchmarkEvaluation callback
        self._seconds_before = 0.0  # wall time of the sessions before a resume
        self.trained_samples = TrainedSamples()  # the key of every sample trained on, written with each checkpoint
        self.weights_step = 0  # the step the loaded weights were trained to: what validate and predict report
        # Checkpoints hold trainable tensors only, so loading must not demand the frozen ones.
        self.strict_loading = False

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams["init_from"]:
            # A resumed run replaces this with its checkpoint's history (which carries the same stages).
            self.trained_samples, carried = TrainedSamples.next_stage(self.hparams["init_from"])
            rank_zero_info(f"theworld: {carried}")

    def configure_model(self) -> None:
        if self.model is None:
            self.model = TheWorld.from_config(self.world_config)
            self.world_config = self.model.config  # with the bases pinned to what was loaded
            if self.hparams["init_from"]:
                from theworld.checkpoint import load_trainable_weights, saved_step

                load_trainable_weights(self.model, self.hparams["init_from"])
                self.weights_step = saved_step(Path(self.hparams["init_from"]) / WEIGHTS_NAME) or 0
        if self.hparams["compile"]:
            # In place, layer by layer: parameter names (and so checkpoint keys) stay unchanged.
            for layer in self.model.gemma.model.language_model.layers:
                if layer._compiled_call_impl is None:
                    layer.compile()
        if self._trainable_keys is None:
            # Taken before a strategy wraps submodules: FSDP renames parameters and flattens them
            # into 1-D shards (it keeps the parameter objects, so the optimizer groups stay valid).
            trainable = [(name, param) for name, param in self.model.named_parameters() if param.requires_grad]
            self._trainable_keys = {f"model.{name}" for name, _ in trainable}
            # Matrices get weight decay; vectors (norms, biases) do not.
            self._decay_groups = (
                [param for _, param in trainable if param.ndim >= 2],
                [param for _, param in trainable if param.ndim < 2],
            )

    def on_train_start(self) -> None:
        self._fit_started = (time.perf_counter(), self.global_step)
        self._window = [time.perf_counter(), 0, 0]  # since the last logging step: start, samples, tokens
        checkpoint = self.trainer.checkpoint_callback
        dirpath = checkpoint.dirpath if isinstance(checkpoint, ModelCheckpoint) else None
        log_dir = self.trainer.log_dir if self.trainer.loggers else None
        max_steps, max_epochs = self.trainer.max_steps, self.trainer.max_epochs
        end = str(max_steps) if max_steps > 0 else f"the end of epoch {max_epochs}" if max_epochs else "no limit"
        rank_zero_info(
            f"theworld: training steps {self.global_step} -> {end}"
            + (f"; checkpoints in {Path(dirpath).resolve()}" if dirpath else "")
            + (f"; logs in {Path(log_dir).resolve()}" if log_dir is not None else "")
        )

    def on_train_end(self) -> None:
        # One line a person reads at the end of a run: how long, how fast, where the loss ended.
        start, first_step = self._fit_started
        seconds, steps = time.perf_counter() - start, self.global_step - first_step
        self._data_totals()  # every rank is here: the reduce is safe
        summary = self.run_summary()
        loss = summary.train_loss
        rank_zero_info(
            f"theworld: trained {steps} steps in {seconds:.1f} s ({seconds / max(steps, 1):.3f} s/step)"
            + (f", last train/loss {loss:.4f}" if loss is not None else "")
            + (f"; held-out: {self.caption_scores}" if self.caption_scores else "")
            + f"; {summary.data_yield_line()}"
        )
        log_dir = self.trainer.log_dir  # a broadcast under DDP: every rank asks
        if self.trainer.is_global_zero:
            out = Path(log_dir or self.trainer.default_root_dir) / DATA_YIELD_NAME
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data_yield_json(summary))

    def run_summary(self, step: int | None = None, final: bool = False) -> RunSummary:
        """The run so far, as of ``step`` (default: now); safe to call from the checkpoint writer thread."""
        trainer, step = self.trainer, self.global_step if step is None else step
        # Lightning sets Trainer.datamodule in its data connector; the class does not declare it
        data = getattr(trainer.datamodule, "config", None)  # type: ignore[attr-defined]
        per_device = data.batch_size if data else 1
        effective_batch = per_device * trainer.world_size * trainer.accumulate_grad_batches
        dataset = (data.dataset_name or data.train_data) if data else None
        started = getattr(self, "_fit_started", None)
        parameters = list(self.model.parameters()) if self.model is not None else []
        return RunSummary(
            model_config=self.world_config,
            dataset=", ".join(dataset) if isinstance(dataset, (list, tuple)) else dataset,
            step=step,
            max_steps=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None,
            # Lightning counts the epoch that max_steps cut short once training ends.
            epochs=trainer.current_epoch if final else trainer.current_epoch + 1,
            samples_seen=step * effective_batch,
            effective_batch=effective_batch,
            learning_rate=self.hparams["learning_rate"],
            trainable_params=sum(p.numel() for p in parameters if p.requires_grad),
            total_params=sum(p.numel() for p in parameters),
            world_tokens=self.model.num_world_tokens if self.model is not None else 0,
            wall_seconds=self._seconds_before + (time.perf_counter() - started[0] if started else 0.0),
            final=final,
            train_losses=tuple(self._train_losses),
            history=tuple(self._history),
            gallery=tuple(self._gallery),
            skipped=dict(self._skipped_reported),
            samples_trained=self._trained_reported,
            benchmark=self.benchmark,
        )

    def on_train_epoch_start(self) -> None:
        # Lightning sets epochs on samplers only; streaming sources reshuffle by epoch themselves.
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if dataset is not None and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    # ------------------------------------------------------------------------------ steps
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        assert self.model is not None, "configure_model builds the model"
        out = self.model(**batch)
        loss, tokens = out["loss"], out["num_tokens"].float()
        logged_loss = loss.detach()  # a number for the logs and the run summary, outside the autograd graph
        world_size = self.trainer.world_size
        if world_size > 1:
            # DDP/FSDP average the ranks' gradients, so per-rank token means would weight a token by
            # 1 / (its rank's token count). Scaling each rank's token-loss sum by world_size / (global
            # token count) makes the averaged gradient the mean over every answer token of the global
            # batch, as in one process with the same global batch.
            local_sum = loss.detach() * tokens
            global_sum, tokens = self.trainer.strategy.reduce(torch.stack([local_sum, tokens]), reduce_op="sum")
            loss = loss * (out["num_tokens"] * world_size / tokens)
            logged_loss = global_sum / tokens
        # Already global under DDP (same value on every rank): no sync_dist needed.
        batch_size = batch["input_ids"].shape[0]
        self.log("train/loss", logged_loss, prog_bar=True, batch_size=batch_size)
        self.log("train/answer_tokens", tokens, batch_size=batch_size)
        self._count(batch, logged_loss)
        return loss

    def _count(self, batch: dict, loss: torch.Tensor) -> None:
        """Adds the batch to the running counters (host-side ints: no sync); on logging steps logs the rates since
        the previous logging step, the learning rate and the bad-sample totals."""
        self._window[1] += len(batch["input_ids"])
        self.trained_samples.add(self.global_step, batch["key"])
        self.samples_trained += len(batch["key"])
        self.key_kinds.update(batch.get("key_kind") or ())
        self._window[2] += batch.get("tokens", 0)
        for counts in batch.get("skipped") or ():
            self.skipped_samples.update(counts or {})
        # Lightning's LearningRateMonitor asks the same question to log only when the loggers will write.
        if not lightning_private.should_update_logs(self.trainer):
            return
        start, samples, tokens = self._window
        seconds = max(time.perf_counter() - start, 1e-9)
        ranks = self.trainer.world_size  # each rank trains its own batch of the same size
        self.log("train/samples_per_sec", samples * ranks / seconds, prog_bar=True, rank_zero_only=True)
        self.log("train/tokens_per_sec", tokens * ranks / seconds, rank_zero_only=True)
        scheduler = cast(LRScheduler, self.lr_schedulers())  # configure_optimizers returns one LambdaLR
        self.log("train/lr", scheduler.get_last_lr()[0], rank_zero_only=True)
        self._window = [time.perf_counter(), 0, 0]
        self._train_losses.append((self.global_step, float(loss)))  # read on logging steps only, as loggers do
        for reason, count in self._data_totals().items():
            self.log(f"data/skipped_{reason}", float(count))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        assert self.model is not None, "configure_model builds the model"
        out = self.model(**batch)
        self.log("val/loss", out["loss"], prog_bar=True, batch_size=batch["input_ids"].shape[0], sync_dist=True)
        wanted = self.hparams["val_captions"] - len(self.caption_samples)
        if wanted > 0 and "caption" in batch:
            self.caption_samples += self._caption(batch, wanted)

    def _caption(self, batch: dict, limit: int) -> list[CaptionSample]:
        """Generates captions for up to ``limit`` images of a validation batch, beside their references."""
        # Lightning sets Trainer.datamodule in its data connector; the class does not declare it
        processor = self.trainer.datamodule.processor  # type: ignore[attr-defined]
        rows = {
            key: value[:limit] if isinstance(value, (torch.Tensor, list)) else value
            for key, value in processor.prompt_only(batch).items()
        }
        assert self.model is not None, "configure_model builds the model"
        generated = self.model.generate_from_batch(rows, max_new_tokens=self.hparams["max_new_tokens"])
        images = processor.images(rows) or [None] * len(generated)
        return [
            CaptionSample(key, reference, text, image)
            for key, reference, text, image in zip(rows["key"], rows["caption"], generated, images, strict=True)
        ]

    def on_validation_epoch_start(self) -> None:
        self.caption_samples = []
        if self._revalidating_step is not None and not self.trainer.sanity_checking:
            if self.trainer.state.fn == "fit" and self.global_step == self._revalidating_step:  # nothing trained yet
                # Lightning counts this validation-only iteration as one more logged step: taken back here, so that
                # every metric is logged at the step the uninterrupted run logged it at.
                lightning_private.take_back_logged_step(self.trainer)
            self._revalidating_step = None

    def on_validation_end(self) -> None:
        # Lightning has reduced the epoch's metrics by now; sanity checks and `theworld validate` are not the run.
        if self.trainer.state.fn != "fit" or self.trainer.sanity_checking:
            return
        metrics = self.trainer.callback_metrics
        captions = {
            name.removeprefix("val/caption_"): float(value)
            for name, value in metrics.items()
            if name.startswith("val/caption_")
        }
        summary = self.run_summary()
        self._history.append(
            ValidationRecord(
                self.global_step,
                summary.samples_seen,
                summary.train_loss,
                float(metrics["val/loss"]) if "val/loss" in metrics else None,
                captions,
            )
        )
        self._gallery = list(self.caption_samples)
        self._log_gallery()

    def _log_gallery(self) -> None:
        """The held-out images beside their generated and reference captions, as a W&B table when W&B logs."""
        rows = [s for s in self._gallery if s.image is not None][:GALLERY_SIZE]
        for logger in self.loggers:
            if isinstance(logger, WandbLogger) and rows:
                import wandb

                logger.log_table(
                    "val/gallery",
                    columns=["image", "generated", "reference"],
                    data=[[wandb.Image(s.image), s.generated, s.reference] for s in rows],
                    step=self.global_step,
                )

    def on_validation_epoch_end(self) -> None:
        if not self.caption_samples:
            return
        # Rank 0's images stand for all ranks: the check is a sample, and gathering images costs a collective.
        self.caption_scores = score_captions(self.caption_samples)
        for name, value in self.caption_scores.metrics().items():
            self.log(name, value, rank_zero_only=True)
        if not self.trainer.sanity_checking:
            step = self.global_step if self.trainer.state.fn == "fit" else self.weights_step
            rank_zero_info(f"theworld: step {step}: {self.caption_scores}")

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        assert self.model is not None, "configure_model builds the model"
        texts = self.model.generate_from_batch(batch, max_new_tokens=self.hparams["max_new_tokens"])
        return [{"image": key, "text": text} for key, text in zip(batch["key"], texts, strict=True)]

    def on_train_epoch_end(self) -> None:
        # Step values reach the loggers only every log_every_n_steps, so the last steps' counts would be
        # lost; logging the totals again here makes each reason's last logged value its total.
        for reason, count in self._data_totals().items():
            self.log(f"data/skipped_{reason}", float(count))

    def _data_totals(self) -> dict[str, int]:
        """Skip counts by reason since the run began, summed over ranks (each rank reads its own share); the
        samples trained and the kinds of their keys are summed with them, for the run summary and provenance."""
        if self.trainer.world_size == 1:
            self._skipped_reported = dict(self.skipped_samples)
            self._trained_reported = self.samples_trained
            return self._skipped_reported
        counts = torch.tensor(
            [self.skipped_samples[reason] for reason in SKIP_REASONS]
            + [self.samples_trained]
            + [kind in self.key_kinds for kind in KEY_KINDS],
            device=self.device,
        )
        totals = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        self._skipped_reported = {reason: n for reason, n in zip(SKIP_REASONS, totals, strict=False) if n}
        self._trained_reported = totals[len(SKIP_REASONS)]
        self.key_kinds = {kind for kind, n in zip(KEY_KINDS, totals[len(SKIP_REASONS) + 1 :], strict=False) if n}
        return self._skipped_reported

    # ------------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        decay, no_decay = self._decay_groups
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams["learning_rate"],
            betas=tuple(self.hparams["betas"]),
            fused=torch.cuda.is_available(),
        )
        # max_steps first: a stream has no length, and estimating one would build the train loader
        # before a resumed checkpoint restores its position (Lightning #20550).
        total: int | float | None = self.trainer.max_steps
        if total is None or total < 0:
            total = self.trainer.estimated_stepping_batches
        if total is None or total == float("inf") or total < 0:
            rank_zero_warn(
                "The run's length is unknown (trainer.max_steps unset, data stream without length): the LR "
                "stays constant after warmup. Set --trainer.max_steps for the cosine schedule."
            )
            total = None
        else:
            total = max(1, int(total))
        warmup = min(self.hparams["warmup_steps"], total or self.hparams["warmup_steps"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total, self.hparams["min_lr_ratio"])
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if (
            gradient_clip_val
            and gradient_clip_algorithm in (None, "norm")
            and isinstance(self.trainer.strategy, FSDPStrategy)
        ):
            # Lightning's FSDP precision plugin refuses norm clipping: the norm spans every rank's
            # shards, which FSDP's own clip_grad_norm_ computes.
            cast(FullyShardedDataParallel, self.trainer.model).clip_grad_norm_(gradient_clip_val)  # FSDP-wrapped
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _explain_schedule_change(self, saved_max_steps: int | None, step: int) -> None:
        """The LR schedule spans trainer.max_steps: resuming with another value reshapes the rest of it."""
        max_steps = self.trainer.max_steps
        if saved_max_steps is None or saved_max_steps == max_steps or self.trainer.state.fn != "fit":
            return
        hp = self.hparams

        def lr(max_steps: int) -> float:
            total = max_steps if max_steps and max_steps > 0 else None
            warmup = min(hp["warmup_steps"], total or hp["warmup_steps"])
            return hp["learning_rate"] * warmup_cosine(step, warmup, total, hp["min_lr_ratio"])

        rank_zero_info(
            f"theworld: resuming at step {step} of a run scheduled for trainer.max_steps={saved_max_steps}; this run "
            f"goes to {max_steps}, so the cosine LR schedule now spans {max_steps} steps: the LR at step {step} is "
            f"{lr(max_steps):.3g} instead of {lr(saved_max_steps):.3g}."
        )

    # ------------------------------------------------------------- trainable-only checkpoints
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """TheWorld's trainable tensors in full, keyed as in ``TheWorld.state_dict()``.

        Call it on every rank: under FSDP the shards are gathered onto rank 0 (the others get ``{}``).
        """
        state = self._only_trainable(self.trainer.strategy.lightning_module_state_dict())
        return {name.removeprefix("model."): tensor for name, tensor in state.items()}

    def _only_trainable(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = self._trainable_keys
        assert keys is not None, "configure_model records the trainable keys"
        return {name: tensor for name, tensor in state_dict.items() if name in keys}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning stored every weight (under FSDP gathered to rank 0); only the trainable ones belong here.
        checkpoint["state_dict"] = self._only_trainable(checkpoint["state_dict"])
        checkpoint["theworld_config"] = self.world_config.to_dict()
        checkpoint["schedule_max_steps"] = self.trainer.max_steps
        summary = self.run_summary()
        checkpoint["run_summary"] = {  # plain types: training states load with weights_only=True
            "wall_seconds": summary.wall_seconds,
            "train_losses": [list(pair) for pair in summary.train_losses],
            "history": [dataclasses.asdict(record) for record in summary.history],
            "benchmark": (
                {"step": self.benchmark.step, "result": self.benchmark.result.to_dict()} if self.benchmark else None
            ),
        }
        if self.trainer.world_size > 1:
            # Lightning keeps rank 0's loader state only, but every rank reads its own share of the
            # stream: keep each rank's position (every rank runs this hook, so the gather is safe).
            positions = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(positions, lightning_private.loader_state(checkpoint))
            checkpoint[DATA_POSITIONS] = positions
        checkpoint["skipped_samples"] = self._data_totals()  # every rank runs this hook: the reduce is safe
        checkpoint["samples_trained"] = self._trained_reported
        checkpoint["key_kinds"] = sorted(self.key_kinds)
        save = self.provenance()
        if save is not None:
            checkpoint[PROVENANCE_KEY] = save

    def provenance(self):
        """The rows trained since the last save (labelled with the kinds of key) with the history they extend (a
        ProvenanceSave) on rank 0, ``None`` elsewhere; call it on every rank (a reduce and a gather)."""
        self._data_totals()  # gathers the kinds of key
        save = self.trained_samples.save(self.global_rank, self.trainer.world_size, self.global_step)
        if save is not None and save.rows is not None:
            save.rows = with_key_kinds(save.rows, self.key_kinds)
        return save

    def _validate_the_resume_step_again(self, checkpoint: dict) -> None:
        """A checkpoint is written at the end of its step, before that step's validation runs, and Lightning skips
        that validation on resume: its row would be missing from the run summary (and the card) for good. Marked
        as interrupted mid-validation, it runs again on resume, on the same weights, before training goes on."""
        step = checkpoint.get("global_step", 0)
        progress = lightning_private.validation_progress(checkpoint)
        if step and progress is not None and all(record.step != step for record in self._history):
            lightning_private.mark_validation_started(progress)
            self._revalidating_step = step

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.weights_step = checkpoint.get("global_step", 0)
        self._explain_schedule_change(checkpoint.get("schedule_max_steps"), checkpoint.get("global_step", 0))
        carried = checkpoint.get("run_summary", {})
        self._seconds_before = carried.get("wall_seconds", 0.0)
        self._train_losses = [tuple(pair) for pair in carried.get("train_losses", [])]
        self._history = [ValidationRecord(**record) for record in carried.get("history", [])]
        benchmark = carried.get("benchmark")
        self.benchmark = (
            BenchmarkRecord(benchmark["step"], EvaluationResult.from_dict(benchmark["result"])) if benchmark else None
        )
        self._validate_the_resume_step_again(checkpoint)
        # Runs before Lightning restores the loops: hand each rank its own data position.
        positions = checkpoint.get(DATA_POSITIONS)
        if positions is not None:
            if len(positions) != self.trainer.world_size:
                raise ValueError(
                    f"This checkpoint was saved by {len(positions)} ranks but this run has {self.trainer.world_size}: "
                    "resume with the same trainer.devices x trainer.num_nodes (and data.num_workers) to continue "
                    "the data stream exactly, or start a new run from its weights with --model.init_from."
                )
            lightning_private.set_loader_state(checkpoint, positions[self.global_rank])
        # The checkpoint's history (its provenance.json, not its rows): rank 0 continues it at the next save.
        self.trained_samples = checkpoint.get(PROVENANCE_KEY) or TrainedSamples()
        # The saved counts are the sum over ranks: one rank carries them on, so the sum stays right.
        self.skipped_samples = Counter(checkpoint.get("skipped_samples", {}) if self.global_rank == 0 else {})
        self.samples_trained = checkpoint.get("samples_trained", 0) if self.global_rank == 0 else 0
        self.key_kinds = set(checkpoint.get("key_kinds", ()))
