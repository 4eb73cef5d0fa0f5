"""``TrainableCheckpoint``: Lightning's ModelCheckpoint writing trainable-only checkpoint folders.

Each save is a folder ``checkpoint-{step}/``::

    model.safetensors    trainable tensors only, keys as in model.state_dict()
    config.json          what rebuilds the model (base ids, world layout, freeze flags)
    training_state.pt    optimizer + LR scheduler state, loop counters, data position

Rotation (``save_top_k``, ``every_n_train_steps``), ``last`` and resuming (``--ckpt_path``) are
Lightning's own; this module only changes the on-disk format, through a CheckpointIO plugin.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_utilities.core.apply_func import apply_to_collection
from safetensors.torch import load_file

from theworld.checkpoint import (
    TMP_MARKER,
    TRAINING_STATE_NAME,
    WEIGHTS_NAME,
    UnsafeCheckpointError,
    atomic_directory,
    remove_stale_temporaries,
    save_weights,
)
from theworld.config import TheWorldConfig

log = logging.getLogger(__name__)

_MODEL_PREFIX = "model."  # TheWorldModule keeps TheWorld under `self.model`


class TrainableCheckpointIO(CheckpointIO):
    """Writes and reads a Lightning checkpoint dict as a trainable-only folder (atomic).

    With ``async_save`` (the default) ``save_checkpoint`` only snapshots the tensors to CPU and
    returns; one writer thread writes, renames, links and removes folders in submission order, so
    training is blocked for the copy alone. ``on_saved(path)`` runs on that thread once a folder
    is complete. ``wait()`` drains the queue and re-raises a failed write.
    """

    def __init__(self, async_save: bool = True, on_saved: Callable[[str], None] | None = None):
        self.on_saved = on_saved
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="theworld-ckpt") if async_save else None
        self._pending: list[Future] = []

    def _submit(self, fn: Callable, *args: Any) -> None:
        if self._executor is None:
            fn(*args)
            return
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        self._raise_failed()
        self._pending.append(self._executor.submit(fn, *args))

    def _raise_failed(self) -> None:
        for future in self._pending:
            if future.done() and future.exception() is not None:
                raise RuntimeError(f"Writing a checkpoint failed: {future.exception()}") from future.exception()

    def wait(self) -> None:
        """Blocks until every queued write/link/remove is done; raises if one failed."""
        for future in self._pending:
            future.exception()
        self._raise_failed()
        self._pending.clear()

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        # The snapshot decouples the write from the next optimizer step mutating the tensors.
        snapshot = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().to("cpu", copy=True))
        self._submit(self._write, snapshot, str(path))

    def _write(self, checkpoint: dict[str, Any], path: str) -> None:
        state = dict(checkpoint)
        weights = {k.removeprefix(_MODEL_PREFIX): v for k, v in state.pop("state_dict").items()}
        config = TheWorldConfig.from_dict(state.pop("theworld_config"))
        with atomic_directory(path) as tmp:
            save_weights(weights, config, tmp)
            torch.save(state, tmp / TRAINING_STATE_NAME)
        if self.on_saved is not None:
            self.on_saved(path)

    def link(self, target: str, link: str) -> None:
        """Points ``link`` at ``target`` once ``target`` is written (replacing ``link`` atomically)."""
        self._submit(_replace_with_symlink, target, link)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        self.wait()
        path = Path(path)
        if not (path / TRAINING_STATE_NAME).exists():
            raise FileNotFoundError(
                f"{path} is not a resumable TheWorld checkpoint (no {TRAINING_STATE_NAME}). Pass a "
                f"checkpoint-N/ or last/ folder, or use --model.init_from to start from its weights only."
            )
        # weights_only: a checkpoint may come from the Hub, and a full unpickler would run its code. Only an
        # explicit `--weights_only false` (Lightning's flag: the user trusts this file) lifts it.
        try:
            state = torch.load(path / TRAINING_STATE_NAME, map_location=map_location or "cpu",
                               weights_only=weights_only is not False)
        except pickle.UnpicklingError as err:
            culprit = re.search(r"GLOBAL ([\w.]+)", str(err))
            raise UnsafeCheckpointError(
                f"Refused to load {path / TRAINING_STATE_NAME}: besides tensors and numbers it holds a pickled "
                f"object{f' ({culprit[1]})' if culprit else ''}, and unpickling it could run code from the file. "
                f"TheWorld never writes one, so the file was altered or made by something else: resume from a "
                f"checkpoint you trust. If you made it yourself and trust it, pass --weights_only false."
            ) from None
        weights = load_file(path / WEIGHTS_NAME)
        state["state_dict"] = {_MODEL_PREFIX + k: v for k, v in weights.items()}
        return state

    def remove_checkpoint(self, path) -> None:
        self._submit(_remove, str(path))

    def teardown(self) -> None:
        self.wait()


def _remove(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def _replace_with_symlink(target: str, link: str) -> None:
    tmp_link = f"{link}{TMP_MARKER}link"
    if os.path.lexists(tmp_link):
        os.remove(tmp_link)
    os.symlink(os.path.relpath(target, os.path.dirname(link)), tmp_link)
    if os.path.isdir(link) and not os.path.islink(link):
        _remove(link)  # a full `last/` copy from before the first linkable save
    os.replace(tmp_link, link)


class TrainableCheckpoint(ModelCheckpoint):
    """Saves ``checkpoint-{step}/`` folders with trainable tensors only, keeps ``last``, writes ``final/``.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: theworld.callbacks.TrainableCheckpoint
              init_args:
                dirpath: runs/datacomp/checkpoints
                every_n_train_steps: 500
                save_top_k: 3        # with monitor unset: the 3 newest are kept
                async_save: true     # training waits only for a CPU copy of the tensors
    """

    FILE_EXTENSION = ""
    CHECKPOINT_NAME_LAST = "last"

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "checkpoint-{step}",
        every_n_train_steps: int | None = 500,
        save_top_k: int = -1,
        save_last: bool | str = "link",
        monitor: str | None = None,
        mode: str = "min",
        async_save: bool = True,
        **kwargs: Any,
    ):
        self.async_save = async_save
        if monitor is None and save_top_k > 0:
            # Without a metric, "top k" means the k newest: rank checkpoints by step.
            monitor, mode = "step", "max"
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            every_n_train_steps=every_n_train_steps,
            save_top_k=save_top_k,
            save_last=save_last,
            monitor=monitor,
            mode=mode,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            **kwargs,
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        super().setup(trainer, pl_module, stage)
        # The folder format belongs to this callback, so it installs its own CheckpointIO.
        if not isinstance(trainer.strategy.checkpoint_io, TrainableCheckpointIO):
            trainer.strategy.checkpoint_io = TrainableCheckpointIO(async_save=self.async_save)
        trainer.strategy.checkpoint_io.on_saved = lambda path: self._notify_saved(trainer, path, final=False)
        if trainer.is_global_zero:
            remove_stale_temporaries(self.dirpath)

    def _link_checkpoint(self, trainer: L.Trainer, filepath: str, linkpath: str) -> None:
        # Queued behind the write of `filepath`, so `last` never points at a folder not yet complete.
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            trainer.strategy.checkpoint_io.link(filepath, linkpath)
        trainer.strategy.barrier()

    @staticmethod
    def _notify_saved(trainer: L.Trainer, path: str | Path, final: bool) -> None:
        """Tells callbacks with ``on_trainable_checkpoint_saved`` (the Hub sync) that a folder is complete.

        Runs on the checkpoint writer thread for intermediate saves: hooks must be thread-safe."""
        for callback in trainer.callbacks:
            hook = getattr(callback, "on_trainable_checkpoint_saved", None)
            if hook is not None:
                hook(trainer, str(path), final=final)

    @property
    def final_dir(self) -> Path:
        return Path(self.dirpath) / "final"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        weights = pl_module.trainable_state_dict()  # on every rank: FSDP gathers the shards here
        if trainer.is_global_zero:
            trainer.strategy.checkpoint_io.wait()
            with atomic_directory(self.final_dir) as tmp:
                save_weights(weights, pl_module.world_config, tmp)
            log.info("Final trainable weights written to %s", self.final_dir)
            self._notify_saved(trainer, self.final_dir, final=True)
        trainer.strategy.barrier("theworld_final_saved")
