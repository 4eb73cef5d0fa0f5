"""``TheWorldFSDPStrategy``: Lightning's FSDP with TheWorld's wrapping and trainable-only checkpoints.

DDP needs nothing of its own (``--trainer.strategy ddp``): it only synchronises parameters with
``requires_grad``, so the frozen Gemma/Cosmos weights are never all-reduced, and every trainable
tensor is used in each step, so ``find_unused_parameters`` stays off.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    MixedPrecision,
    OptimStateKeyType,
    StateDictType,
)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.nn import Module


def default_wrap_layers() -> set[type[Module]]:
    """The repeated blocks of Gemma 3 (language) and SigLIP (vision): one FSDP unit each."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3DecoderLayer
    from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

    return {Gemma3DecoderLayer, SiglipEncoderLayer}


class TheWorldFSDPStrategy(FSDPStrategy):
    """FSDP that shards Gemma 3 / SigLIP layer by layer and saves TheWorld's trainable-only folders.

    * ``auto_wrap_policy`` defaults to one unit per ``Gemma3DecoderLayer`` and ``SiglipEncoderLayer``;
    * ``use_orig_params=True``: only some parameters train, and the optimizer holds the real ones;
    * saving gathers the full state onto rank 0 (on CPU), where TheWorldModule keeps the trainable
      tensors only, so ``checkpoint-N/`` and ``final/`` have exactly the single-device format, the
      optimizer state included (keyed by index in the optimizer's parameter list). FSDP gathers a
      unit whole, so each save streams the frozen weights to rank 0's CPU too, unit by unit;
    * loading reads those folders (Lightning's FSDP loader expects its own file or shard layout);
    * with ``precision: bf16-mixed`` buffers stay fp32 (Lightning would cast them to bf16).

    One FSDP unit flattens its parameters into one tensor, so they must share a dtype: trainable
    weights are fp32, so train with ``model.frozen_dtype: float32`` (bf16 compute comes from
    ``trainer.precision: bf16-mixed``), as ``configs/fsdp.yaml`` does.

    Example (YAML)::

        trainer:
          strategy:
            class_path: theworld.lit.strategies.TheWorldFSDPStrategy
            init_args:
              sharding_strategy: FULL_SHARD
    """

    def __init__(self, auto_wrap_policy: Any = None, **kwargs: Any):
        kwargs.setdefault("use_orig_params", True)
        super().__init__(auto_wrap_policy=auto_wrap_policy or default_wrap_layers(), **kwargs)

    @property
    def mixed_precision_config(self) -> MixedPrecision | None:
        config = super().mixed_precision_config
        if config is None or self.mixed_precision is not None:  # an explicit mixed_precision wins
            return config
        # Lightning casts buffers to the compute dtype as well. Gemma's rotary frequencies (inv_freq)
        # in bf16 are off by up to 0.4%, which turns positions ~1000 tokens in by whole radians, and
        # the VAE's latent statistics lose digits too: keep buffers in the dtype they were loaded in.
        return dataclasses.replace(config, buffer_dtype=None)

    def _setup_model(self, model: Module) -> Module:  # an override: see theworld.lightning_private
        if self.root_device.type != "cpu":
            return super()._setup_model(model)
        # Lightning hands FSDP the CUDA device index (None on CPU) and torch's FSDP then refuses a
        # machine without an accelerator; naming the CPU lets it shard over gloo (the CPU tests).
        return FSDP(
            model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=self.root_device,
            **self.kwargs,
        )

    def _full_state(self, rank0_only: bool = True):
        """Unsharded model and optimizer state dicts, as CPU tensors on rank 0 alone.

        On a CPU device, offloading would free the very tensors it returns (a segfault), so there
        every rank gathers its own copy instead.
        """
        assert self.model is not None, "the strategy has wrapped the model"
        offload = self.root_device.type != "cpu"
        rank0_only = rank0_only and offload
        return FSDP.state_dict_type(
            self.model,
            StateDictType.FULL_STATE_DICT,
            FullStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
            FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
        )

    def lightning_module_state_dict(self) -> dict[str, Any]:
        assert self.model is not None, "the strategy has wrapped the model"
        with self._full_state():
            return self.model.state_dict()

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer.optimizer
        assert self.model is not None, "the strategy has wrapped the model"
        with self._full_state():
            state = FSDP.optim_state_dict(self.model, optimizer)
        if self.global_rank != 0:
            return state
        # Keyed by index in the optimizer's own parameter list, as a single-device optimizer saves it.
        return FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model, optim=optimizer)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        # Every rank reads the same folder and keeps its own shard of it.
        path = Path(self.broadcast(checkpoint_path))
        assert self.model is not None and self.lightning_module is not None, "the strategy has wrapped the model"
        checkpoint = self.checkpoint_io.load_checkpoint(path, weights_only=weights_only)
        fitting = self.lightning_module.trainer.state.fn == TrainerFn.FITTING
        optimizer_states = checkpoint.get("optimizer_states") if fitting else None
        if optimizer_states is not None and len(optimizer_states) != len(self.optimizers):
            raise RuntimeError(
                f"{path} holds {len(optimizer_states)} optimizer states but this run has {len(self.optimizers)}."
            )
        with self._full_state(rank0_only=False):
            # Trainable tensors only: the frozen ones came from the base models.
            self.model.load_state_dict(checkpoint.pop("state_dict"), strict=False)
            for optimizer, state in zip(self.optimizers, optimizer_states or [], strict=False):
                state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_NAME, self.model, optim=optimizer)
                optimizer.load_state_dict(FSDP.optim_state_dict_to_load(self.model, optimizer, state))
        return checkpoint
