"""TheWorldModule: the LightningModule that trains TheWorld's trainable parameters."""

from __future__ import annotations

import math
from collections import Counter

import lightning as L
import torch

from theworld.config import TheWorldConfig
from theworld.model import TheWorld


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TheWorldModule(L.LightningModule):
    """Trains TheWorld with AdamW over the trainable parameters only.

    The model options mirror ``TheWorldConfig`` so they read ``--model.freeze_gemma_language false``
    on the command line. Weights load in ``configure_model``, after callbacks' ``setup`` (so the Hub
    preflight fails fast, before gigabytes are read).

    Example:
        >>> module = TheWorldModule(gemma_model_name="google/gemma-3-4b-it", learning_rate=1e-4)
        >>> L.Trainer(max_steps=100).fit(module, datamodule=TheWorldDataModule(...))
    """

    def __init__(
        self,
        gemma_model_name: str = TheWorldConfig.gemma_model_name,
        cosmos_model_name: str = TheWorldConfig.cosmos_model_name,
        cosmos_subfolder: str = TheWorldConfig.cosmos_subfolder,
        freeze_gemma_vision: bool = True,
        freeze_gemma_language: bool = True,
        freeze_cosmos_vae: bool = True,
        enable_world: bool = True,
        world_image_size: int = 448,
        world_patch_size: int = 2,
        projector_hidden_dim: int | None = None,
        frozen_dtype: str = "auto",
        attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False,
        init_from: str | None = None,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        max_new_tokens: int = 32,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.world_config = TheWorldConfig(
            **{name: value for name, value in self.hparams.items() if name in TheWorldConfig.__dataclass_fields__}
        )
        self.model: TheWorld | None = None
        self.skipped_samples: Counter[str] = Counter()
        # Checkpoints hold trainable tensors only, so loading must not demand the frozen ones.
        self.strict_loading = False

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model = TheWorld.from_config(self.world_config)
        if self.hparams.init_from:
            from theworld.checkpoint import load_trainable_weights

            load_trainable_weights(self.model, self.hparams.init_from)

    def on_train_epoch_start(self) -> None:
        # Lightning sets epochs on samplers only; streaming sources reshuffle by epoch themselves.
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    # ------------------------------------------------------------------------------ steps
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(**batch)
        batch_size = batch["input_ids"].shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=batch_size)
        self.log("train/answer_tokens", out["num_tokens"].float(), batch_size=batch_size)
        self._log_skipped(batch.get("skipped"))
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model(**batch)
        self.log("val/loss", out["loss"], prog_bar=True, batch_size=batch["input_ids"].shape[0], sync_dist=True)

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        texts = self.model.generate_from_batch(batch, max_new_tokens=self.hparams.max_new_tokens)
        return [{"image": key, "text": text} for key, text in zip(batch["key"], texts)]

    def _log_skipped(self, per_sample_counts) -> None:
        """Sums the bad-sample counters that the loader workers attach to samples."""
        for counts in per_sample_counts or ():
            self.skipped_samples.update(counts or {})
        for reason, count in self.skipped_samples.items():
            self.log(f"data/skipped_{reason}", float(count), reduce_fx="max")

    # ------------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        decay, no_decay = [], []
        for param in self.model.parameters():
            if param.requires_grad:
                (decay if param.ndim >= 2 else no_decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.learning_rate,
            betas=tuple(self.hparams.betas),
            fused=torch.cuda.is_available(),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total, self.hparams.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------- trainable-only checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning would store every weight; only the trainable ones belong in a checkpoint.
        checkpoint["state_dict"] = {f"model.{k}": v for k, v in self.model.trainable_state_dict().items()}
        checkpoint["theworld_config"] = self.world_config.to_dict()
