"""``TrainableCheckpoint``: Lightning's ModelCheckpoint writing trainable-only checkpoint folders.

Each save is a folder ``checkpoint-{step}/``::

    model.safetensors    trainable tensors only, keys as in model.state_dict()
    config.json          what rebuilds the model (base ids, world layout, freeze flags)
    training_state.pt    optimizer + LR scheduler state, loop counters, data position

Rotation (``save_top_k``, ``every_n_train_steps``), ``last`` and resuming (``--ckpt_path``) are
Lightning's own; this module changes the on-disk format, through a CheckpointIO plugin, and announces each
complete folder to the other callbacks as a :class:`~theworld.layout.SavedCheckpoint` (the Hub sync pushes it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import pickle
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import lightning as L
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info
from lightning_utilities.core.apply_func import apply_to_collection
from safetensors.torch import load_file

from theworld import lightning_private, stops
from theworld.checkpoint import (
    CheckpointWriteFailed,
    UnsafeCheckpointError,
    damage,
    remove_stale_temporaries,
    save_weights,
    writing_checkpoint,
)
from theworld.config import TheWorldConfig
from theworld.errors import UserError
from theworld.layout import (
    CHECKPOINT_EVALUATION_NAME,
    FINAL_DIR,
    LAST_LINK,
    TMP_MARKER,
    TRAINING_STATE_NAME,
    WEIGHTS_NAME,
    SavedCheckpoint,
)
from theworld.provenance import PROVENANCE_KEY, TrainedSamples, write_provenance

if TYPE_CHECKING:
    from theworld.lit.module import TheWorldModule

log = logging.getLogger(__name__)

_MODEL_PREFIX = "model."  # TheWorldModule keeps TheWorld under `self.model`


def resumable_folders(folder: Path) -> list[Path]:
    """Complete resumable checkpoint folders in ``folder`` (not ``last``, ``final`` or temporaries), oldest first."""
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir()
        and not p.is_symlink()
        and p.name not in (LAST_LINK, FINAL_DIR)
        and not p.name.startswith(".")
        and TMP_MARKER not in p.name
        and (p / TRAINING_STATE_NAME).is_file()
    ]
    return sorted(found, key=lambda p: ((p / TRAINING_STATE_NAME).stat().st_mtime, p.name))


class DamagedCheckpoint(UserError):
    """A checkpoint file that cannot be read: cut short (a full disk, a copy that stopped) or overwritten."""


def check_intact(folder: str | Path, flag: str) -> None:
    """Raises :class:`DamagedCheckpoint` if the weights or training state in ``folder`` are damaged, naming the file
    and the newest intact ``checkpoint-N/`` before it to give ``flag`` (``--ckpt_path``, ``--model.init_from``)."""
    folder = Path(folder)
    for name in (WEIGHTS_NAME, TRAINING_STATE_NAME):
        reason = damage(folder / name) if (folder / name).is_file() else None
        if reason is None:
            continue
        real = folder.resolve()
        kept = resumable_folders(real.parent)
        earlier = kept[: kept.index(real)] if real in kept else kept  # final/ comes after every checkpoint-N/
        intact = [p for p in earlier if not any(damage(p / n) for n in (WEIGHTS_NAME, TRAINING_STATE_NAME))]
        fix = (
            f"The previous complete checkpoint is {intact[-1]}/: use {flag} {intact[-1]}"
            if intact
            else f"There is no earlier complete checkpoint-N/ in {real.parent}: start again without it"
        )
        raise DamagedCheckpoint(
            f"{flag} {folder}: {real / name} is damaged ({reason}); the file was cut short or overwritten (a full "
            f"disk, a copy or download that stopped), so it cannot be loaded. {fix}. Move the damaged folder away so "
            f"that `--ckpt_path last` does not pick it again."
        )


def newest_checkpoint(folder: str | Path) -> Path | None:
    """What ``--ckpt_path last`` resumes from in ``folder``: ``last`` when it points at a resumable folder, else the
    newest complete ``checkpoint-N/`` (``save_last: false``); None when there is none."""
    folder = Path(folder)
    if (folder / LAST_LINK / TRAINING_STATE_NAME).is_file():
        return folder / LAST_LINK
    complete = resumable_folders(folder)
    return complete[-1] if complete else None


class TrainableCheckpointIO(CheckpointIO):
    """Writes and reads a Lightning checkpoint dict as a trainable-only folder (atomic).

    With ``async_save`` (the default) ``save_checkpoint`` only snapshots the tensors to CPU and
    returns; one writer thread writes, renames, links and removes folders in submission order, so
    training is blocked for the copy alone. ``on_saved(saved)`` runs on that thread once a folder is complete;
    for the saves inside ``with announcing_after():`` only behind everything the block queued (the removals of the
    folders a save rotated away, so ``saved.kept`` never lists them). ``wait()`` drains the queue and re-raises a
    failed write.
    """

    def __init__(self, async_save: bool = True, on_saved: Callable[[SavedCheckpoint], None] | None = None):
        self.on_saved = on_saved
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="theworld-ckpt") if async_save else None
        self._pending: list[Future] = []
        self._deferred: list[tuple[int, Path]] | None = None  # inside announcing_after(): (step, folder) saved
        self._failure: Exception | None = None  # the write that failed; nothing queued after it runs
        self._failure_reported = False

    def _submit(self, fn: Callable, *args: Any) -> None:
        self.check()
        if self._executor is None:
            self._unless_failed(fn, *args)
            return
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._executor.submit(self._unless_failed, fn, *args))

    def _unless_failed(self, fn: Callable, *args: Any) -> None:
        # After a failed write nothing queued behind it runs: `last` keeps pointing at the newest complete folder,
        # and no rotation removes a checkpoint the failed one was to replace.
        if self._failure is None:
            try:
                fn(*args)
            except Exception as err:
                self._failure = err
                if self._executor is None:
                    self.check()

    def check(self) -> None:
        """Raises :class:`CheckpointWriteFailed` (once) if a queued write failed; cheap, called at every step."""
        if self._failure is not None and not self._failure_reported:
            self._failure_reported = True
            if isinstance(self._failure, CheckpointWriteFailed):
                raise self._failure
            raise RuntimeError(f"Writing a checkpoint failed: {self._failure}") from self._failure

    def wait(self) -> None:
        """Blocks until every queued write/link/remove is done; raises if one failed."""
        for future in self._pending:
            future.exception()
        self._pending.clear()
        self.check()

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        # The snapshot decouples the write from the next optimizer step mutating the tensors.
        snapshot = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().to("cpu", copy=True))
        self._submit(self._write, snapshot, str(path))
        if self._deferred is not None:
            self._deferred.append((checkpoint["global_step"], Path(path)))
        elif self.on_saved is not None:
            self._submit(self._report_saved, checkpoint["global_step"], Path(path))

    @contextlib.contextmanager
    def announcing_after(self) -> Iterator[None]:
        """The saves inside are announced behind everything the block queues (Lightning's rotation deletes)."""
        self._deferred = []
        try:
            yield
        finally:
            saved, self._deferred = self._deferred, None
            if self.on_saved is not None:
                for step, path in saved:
                    self._submit(self._report_saved, step, path)

    def _report_saved(self, step: int, path: Path) -> None:
        assert self.on_saved is not None  # queued only when there is a receiver
        if path.is_dir():  # not when its write failed (wait() raises that)
            self.on_saved(SavedCheckpoint(step, path, False, tuple(resumable_folders(path.parent))))

    def _write(self, checkpoint: dict[str, Any], path: str) -> None:
        state = dict(checkpoint)
        weights = {k.removeprefix(_MODEL_PREFIX): v for k, v in state.pop("state_dict").items()}
        config = TheWorldConfig.from_dict(state.pop("theworld_config"))
        provenance = state.pop(PROVENANCE_KEY, None)
        benchmark = state.get("run_summary", {}).get("benchmark")
        with writing_checkpoint(path, stops.progress().checkpoint) as tmp:
            save_weights(weights, config, tmp, step=state["global_step"])
            if provenance is not None:
                write_provenance(provenance, tmp)
            if benchmark is not None:  # readable beside the weights, without loading the training state
                (tmp / CHECKPOINT_EVALUATION_NAME).write_text(json.dumps(benchmark["result"], indent=1) + "\n")
            with open(tmp / TRAINING_STATE_NAME, "wb") as fh:  # a file object: a failed write keeps its errno
                torch.save(state, fh)

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
        check_intact(path, "--ckpt_path")
        # weights_only: a checkpoint may come from the Hub, and a full unpickler would run its code. Only an
        # explicit `--weights_only false` (Lightning's flag: the user trusts this file) lifts it.
        try:
            state = torch.load(
                path / TRAINING_STATE_NAME, map_location=map_location or "cpu", weights_only=weights_only is not False
            )
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
        state[PROVENANCE_KEY] = TrainedSamples.resume(path, state.get("global_step", 0))  # provenance.json only
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


def _checkpoint_io(trainer: L.Trainer) -> TrainableCheckpointIO:
    """The strategy's CheckpointIO, which ``TrainableCheckpoint.setup`` makes a ``TrainableCheckpointIO``."""
    return cast(TrainableCheckpointIO, trainer.strategy.checkpoint_io)


def slurm_requeue_signal(trainer: L.Trainer) -> int | None:
    """The signal on which Lightning's SLURM auto-requeue requeues the job (SIGUSR1 unless configured), or None
    when the run is not a SLURM batch job with auto-requeue on."""
    # The environment Lightning's own signal handling reads.
    environment = lightning_private.cluster_environment(trainer)
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        return environment.requeue_signal
    return None


class UsedCheckpointFolder(UserError):
    """A new run would write into a folder that holds another run's checkpoints."""


class TrainableCheckpoint(ModelCheckpoint):
    """Saves ``checkpoint-{step}/`` folders with trainable tensors only, keeps ``last``, writes ``final/``.

    ``--ckpt_path last`` resumes from ``<dirpath>/last`` (or the newest complete ``checkpoint-N``). A run started
    without ``--ckpt_path`` refuses a folder that already holds checkpoints, unless ``overwrite``. SIGINT (Ctrl-C)
    and SIGTERM (SLURM preemption, ``scancel``, Kubernetes) finish the current step, save it like any other
    checkpoint and stop the run with :class:`~theworld.stops.RunStopped`; a second Ctrl-C stops at once. Under SLURM
    with Lightning's auto-requeue (``#SBATCH --signal=USR1@90``) its signal does the same, then requeues the job.
    Outside the training steps (start-up, the final push) :mod:`theworld.stops` handles the same signals.

    Example (YAML)::

        checkpoint:
          dirpath: runs/datacomp/checkpoints
          every_n_train_steps: 500
          save_top_k: 3        # the 3 newest are kept
    """

    FILE_EXTENSION = ""
    CHECKPOINT_NAME_LAST = LAST_LINK

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int | None = 500,
        save_top_k: int = -1,
        save_last: bool | Literal["link"] = "link",
        async_save: bool = True,
        overwrite: bool = False,
        filename: str = "checkpoint-{step}",
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
        every_n_epochs: int | None = None,
        train_time_interval: timedelta | None = None,
    ):
        """
        Args:
            dirpath: Folder of the checkpoints (default: ``<trainer.default_root_dir>/checkpoints``, whatever the
                logger). ``--ckpt_path last`` resumes from its ``last``.
            every_n_train_steps: Save every this many optimizer steps.
            save_top_k: How many checkpoints to keep: -1 all, k the k newest (or the k best with ``monitor``).
            save_last: Keep ``last`` pointing at the newest checkpoint: "link" (a symlink), true (a copy) or false.
            async_save: Write in a background thread; training waits only for a CPU copy of the tensors.
            overwrite: Let a run started without ``--ckpt_path`` write into a folder that already holds
                checkpoints (overwriting and rotating away what is there).
            filename: Folder name of each checkpoint; ``{step}`` is the optimizer step.
            monitor: A logged metric that ranks checkpoints for ``save_top_k`` (default: the newest are kept).
            mode: With ``monitor``: "min" keeps the lowest values, "max" the highest.
            every_n_epochs: Also save every this many epochs (streams rarely end an epoch; leave unset).
            train_time_interval: Save at this wall-clock interval instead of every N steps.
        """
        self.async_save = async_save
        self.overwrite = overwrite
        if monitor is None and save_top_k > 0:
            # Without a metric, "top k" means the k newest: rank checkpoints by step.
            monitor, mode = "step", "max"
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            every_n_train_steps=every_n_train_steps,
            every_n_epochs=every_n_epochs,
            train_time_interval=train_time_interval,
            save_top_k=save_top_k,
            save_last=save_last,
            monitor=monitor,
            mode=mode,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        self._signal: int | None = None
        self._requeue_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._resumed_step: int | None = None

    @staticmethod
    def folder_for(dirpath: str | Path | None, default_root_dir: str | None) -> Path:
        """Where checkpoints go: ``dirpath``, else ``<default_root_dir>/checkpoints`` (never the logger's version
        folder, so ``--ckpt_path last`` finds the previous run's checkpoints)."""
        return Path(dirpath or os.path.join(default_root_dir or os.getcwd(), "checkpoints"))

    def resolve_dirpath(self, trainer: L.Trainer) -> Path:
        return self.folder_for(self.dirpath, trainer.default_root_dir)

    def _find_last_checkpoints(self, trainer: L.Trainer) -> set[str]:
        # Lightning asks this for `--ckpt_path last` before `setup` runs (an override: see lightning_private).
        folder = self.resolve_dirpath(trainer)
        newest = newest_checkpoint(folder)
        if newest is not None:
            return {str(newest)}
        rank_zero_info(f"theworld: --ckpt_path last: no checkpoint in {folder.resolve()}; training starts from step 0.")
        return set()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.dirpath = str(self.resolve_dirpath(trainer))
        self._resumed_step = None  # set by on_load_checkpoint when this run resumes
        # theworld.stops' handlers stay until the steps start, where this callback's take over: Lightning's would
        # replace them from the end of setup on.
        lightning_private.leave_signals_to_theworld(trainer)
        super().setup(trainer, pl_module, stage)
        # The folder format belongs to this callback, so it installs its own CheckpointIO.
        if not isinstance(trainer.strategy.checkpoint_io, TrainableCheckpointIO):
            trainer.strategy.checkpoint_io = TrainableCheckpointIO(async_save=self.async_save)
        trainer.strategy.checkpoint_io.on_saved = lambda saved: self._on_saved(trainer, saved)
        if trainer.is_global_zero:
            remove_stale_temporaries(self.dirpath)

    @classmethod
    def refuse_used_folder(cls, folder: str | Path) -> None:
        """Raises UsedCheckpointFolder if ``folder`` holds checkpoints: a run that does not resume must not
        overwrite or rotate away checkpoints it did not write. ``theworld fit`` asks before any weight loads."""
        folder = Path(folder)
        found = resumable_folders(folder) + [p for p in (folder / FINAL_DIR,) if p.is_dir()]
        if found:
            names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
            raise UsedCheckpointFolder(
                f"{folder.resolve()} already holds checkpoints of another run ({names}), and this run would "
                f"overwrite or rotate them away. To continue that run, add --ckpt_path last. To start a new run, give "
                f"it its own folder with --checkpoint.dirpath (or --trainer.default_root_dir). To replace the old "
                f"checkpoints on purpose, add --checkpoint.overwrite true."
            )

    @staticmethod  # as ModelCheckpoint's own
    def _link_checkpoint(trainer: L.Trainer, filepath: str, linkpath: str) -> None:
        # An override (see lightning_private). Queued behind the write of `filepath`, so `last` never points at a
        # folder not yet complete.
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            _checkpoint_io(trainer).link(filepath, linkpath)
        trainer.strategy.barrier()

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        # An override (see lightning_private). Lightning queues the save, then the removal of the folder it
        # rotates away: the record comes after both.
        with _checkpoint_io(trainer).announcing_after():
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _on_saved(self, trainer: L.Trainer, saved: SavedCheckpoint) -> None:
        stops.record_checkpoint(saved.step, saved.path)
        self._announce(trainer, saved)

    @staticmethod
    def _announce(trainer: L.Trainer, saved: SavedCheckpoint) -> None:
        """Hands ``saved`` to every callback with ``on_checkpoint_saved`` (the Hub sync).

        Runs on the checkpoint writer thread for intermediate saves: hooks must be thread-safe."""
        # Lightning assigns Trainer.callbacks in its callback connector; the class does not declare it
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            hook = getattr(callback, "on_checkpoint_saved", None)
            if hook is not None:
                hook(trainer, saved)

    @property
    def final_dir(self) -> Path:
        assert self.dirpath is not None, "setup() resolves dirpath"
        return Path(self.dirpath) / FINAL_DIR

    # ------------------------------------------------------------------ starting, interrupting, ending
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self.dirpath is not None, "setup() resolves dirpath"
        if trainer.ckpt_path is None and not self.overwrite:
            # theworld fit asked before loading weights; a Trainer.fit in Python is stopped here, before training.
            error = None
            if trainer.is_global_zero:
                try:
                    self.refuse_used_folder(self.dirpath)
                except UsedCheckpointFolder as err:
                    error = str(err)
            error = trainer.strategy.broadcast(error, src=0)  # every rank stops together
            if error:
                raise UsedCheckpointFolder(error)
        if self._resumed_step is not None and 0 < trainer.max_steps <= self._resumed_step:
            # Resumed at the end: Lightning skips the training loop and with it on_train_end.
            rank_zero_info(
                f"theworld: the run in {Path(self.dirpath).resolve()} already finished at step "
                f"{self._resumed_step} (trainer.max_steps={trainer.max_steps}): nothing to train. Raise "
                f"--trainer.max_steps to train further."
            )
            self._write_final(trainer, pl_module, self._resumed_step, keep_existing=True)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Runs before on_fit_start, which comes before Lightning restores the loops' step counters.
        self._resumed_step = checkpoint.get("global_step")
        if trainer.ckpt_path is not None:
            stops.record_checkpoint(self._resumed_step or 0, Path(trainer.ckpt_path).resolve())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (stop := stops.unfinished_stop()) is not None:  # raised during start-up where a library swallowed it
            raise stop
        self._signal = None
        self._requeue_signal = slurm_requeue_signal(trainer)
        if threading.current_thread() is threading.main_thread():
            # SLURM's requeue signal replaces Lightning's handler, which would save a mid-step checkpoint.
            handler = functools.partial(self._on_signal, trainer)
            for signum in [s for s in {signal.SIGINT, signal.SIGTERM, self._requeue_signal} if s is not None]:
                self._previous_handlers[signum] = signal.signal(signum, handler)

    def _on_signal(self, trainer: L.Trainer, signum: int, frame) -> None:
        if self._signal is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now, without the step
            self._restore_signal_handlers()
            lightning_private.stop_watching_child_ranks()
            raise stops.RunStopped(signum, unsaved_step=trainer.global_step + 1)
        self._signal = signum
        rank_zero_info(
            f"\ntheworld: {signal.Signals(signum).name} received: saving a checkpoint at the end of this "
            f"step, then stopping (Ctrl-C again to stop at once, without it)."
        )

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        _checkpoint_io(trainer).check()  # a write that failed meanwhile stops the run now, not at the next save
        requested = self._signal is not None
        if trainer.world_size > 1:  # every rank stops at the same step (a signal may reach only some of them)
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            self._stop_for_signal(trainer)

    def _stop_for_signal(self, trainer: L.Trainer) -> None:
        signum = self._signal or signal.SIGTERM
        lightning_private.stop_watching_child_ranks()  # every rank exits 128 + signum, rank 0 after its save
        lightning_private.log_this_step(trainer)  # the stop skips the loop's logging of this step
        self._save_unsaved_step(trainer)
        _checkpoint_io(trainer).wait()
        assert self.dirpath is not None, "setup() resolves dirpath"
        path = Path(self.dirpath) / self.CHECKPOINT_NAME_LAST
        path = path.resolve() if path.exists() else Path(self.last_model_path or self.best_model_path)
        rank_zero_info(f"theworld: checkpoint of step {trainer.global_step} written to {path}.")
        self._restore_signal_handlers()
        requeued = None
        if signum == self._requeue_signal:
            requeued = trainer.strategy.broadcast(stops.requeue_slurm_job() if trainer.is_global_zero else None, src=0)
        raise stops.RunStopped(signum, stops.RunProgress(trainer.global_step, path), saved=True, requeued=requeued)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_signal_handlers()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_signal_handlers()
        # Before Lightning's own end-of-training save, which writes `last` alone when nothing was saved yet.
        self._save_unsaved_step(trainer)
        super().on_train_end(trainer, pl_module)
        self._write_final(trainer, pl_module, trainer.global_step)
        if self._signal is not None:  # it came after the last step's end (in the last validation, say)
            raise stops.RunStopped(self._signal, stops.progress(), saved=True)

    def _save_unsaved_step(self, trainer: L.Trainer) -> None:
        """The current step as a resumable ``checkpoint-N/`` (and ``last``), saved like a scheduled save, when the
        schedule did not save it: at a signal stop, and at the end, so that ``--ckpt_path last`` on a finished run
        finds it finished instead of training its last steps again."""
        if trainer.global_step > 0 and lightning_private.last_global_step_saved(self) != trainer.global_step:
            candidates = lightning_private.monitor_candidates(self, trainer)
            lightning_private.save_topk(self, trainer, candidates)
            lightning_private.save_last(self, trainer, candidates)

    def _write_final(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, keep_existing: bool = False
    ) -> None:
        """Writes ``final/`` (``keep_existing``: only if missing) and announces it, e.g. for the last Hub push."""
        module = cast("TheWorldModule", pl_module)  # this callback serves TheWorldModule only
        weights = module.trainable_state_dict()  # on every rank: FSDP gathers the shards here
        provenance = module.provenance()  # on every rank: an all-gather
        if trainer.is_global_zero:
            _checkpoint_io(trainer).wait()
            if not (keep_existing and (self.final_dir / WEIGHTS_NAME).is_file()):
                with writing_checkpoint(self.final_dir, stops.progress().checkpoint) as tmp:
                    save_weights(weights, module.world_config, tmp, step=step)
                    if provenance is not None:
                        write_provenance(provenance, tmp)
                    benchmark = getattr(module, "benchmark", None)  # a module of another kind evaluates nothing
                    if benchmark is not None:
                        benchmark.result.save(tmp / CHECKPOINT_EVALUATION_NAME)
            kept = tuple(resumable_folders(self.final_dir.parent))
            if kept:  # before the line: a stop that comes after it says training finished
                stops.record_checkpoint(step, kept[-1], trained_to_end=True)
            rank_zero_info(f"theworld: final weights in {self.final_dir.resolve()}")
            self._announce(trainer, SavedCheckpoint(step, self.final_dir, True, kept))
        trainer.strategy.barrier("theworld_final_saved")
