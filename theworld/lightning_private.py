"""Every private Lightning name TheWorld relies on, in one place.

Lightning has no public API for these; each function below says which one is missing. The rest of ``theworld``
calls these functions instead of touching the private names, and the methods it overrides are declared in
:data:`PRIVATE_ACCESSES` too (an override of a method Lightning renamed is silently never called again).

``tests/test_lightning_private.py`` checks that every entry still exists on the Lightning installed (failing by
name, e.g. ``ModelCheckpoint._save_topk_checkpoint``) and that no other file of ``theworld`` uses a private
Lightning name; ``pyproject.toml`` keeps Lightning below its next minor version. To move to a new Lightning:
raise that bound, run that test, and fix each entry it names here.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import lightning as L
    import torch
    from lightning.fabric.plugins.environments import ClusterEnvironment
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI


class PrivateAccess(NamedTuple):
    """A private Lightning name: ``owner`` (where Lightning defines it) and ``name``, ``how`` TheWorld uses it
    ("call", "read", "write", "override" or "checkpoint key") and why no public API does."""

    owner: str
    name: str
    how: str
    why: str


_MODEL_CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"
_TRAINER = "lightning.pytorch.Trainer"
_FIT_LOOP_STATE = "lightning.pytorch.loops._FitLoop.state_dict()"

PRIVATE_ACCESSES: tuple[PrivateAccess, ...] = (
    # TrainableCheckpoint (theworld/callbacks/checkpoint.py)
    PrivateAccess(
        _MODEL_CHECKPOINT,
        "_save_topk_checkpoint",
        "override, call",
        "overridden to announce a save after its rotation; called to save the step a signal or the end of "
        "training stops at like any scheduled save: ModelCheckpoint has no public 'save now'",
    ),
    PrivateAccess(
        _MODEL_CHECKPOINT,
        "_save_last_checkpoint",
        "call",
        "updates `last` after such a save (link or copy, per save_last): no public equivalent",
    ),
    PrivateAccess(
        _MODEL_CHECKPOINT,
        "_link_checkpoint",
        "override",
        "the one place Lightning links `last`: overridden to queue the link behind the asynchronous write",
    ),
    PrivateAccess(
        _MODEL_CHECKPOINT,
        "_monitor_candidates",
        "call",
        "the metrics dict _save_topk_checkpoint/_save_last_checkpoint take: no public builder",
    ),
    PrivateAccess(
        _MODEL_CHECKPOINT,
        "_last_global_step_saved",
        "read",
        "the step this callback last saved (not other callbacks' saves): no public property",
    ),
    PrivateAccess(
        _MODEL_CHECKPOINT,
        "_find_last_checkpoints",
        "override",
        "what `--ckpt_path last` asks each ModelCheckpoint: overridden to find checkpoint folders",
    ),
    # slurm_requeue_signal (theworld/callbacks/checkpoint.py)
    PrivateAccess(
        _TRAINER,
        "_accelerator_connector",
        "read",
        "its cluster_environment is Lightning's SLURM environment (auto_requeue, requeue_signal) on every "
        "strategy; trainer.strategy.cluster_environment exists on parallel strategies only",
    ),
    # theworld.stops and TrainableCheckpoint: a stop of a job started by Lightning's own launcher
    PrivateAccess(
        "lightning.fabric.strategies.launchers.subprocess_script._ChildProcessObserver",
        "_child_processes",
        "write",
        "the launcher's watch SIGKILLs every process, rank 0 included, once a child rank exits non-zero; a stop "
        "ends every rank with 128 + the signal, so from then on the watch is given no child to watch: it has no "
        "public off switch",
    ),
    PrivateAccess(
        _TRAINER,
        "_signal_connector",
        "read",
        "holds the registration of Lightning's signal handlers, replaced below: the Trainer has no public switch",
    ),
    PrivateAccess(
        "lightning.pytorch.trainer.connectors.signal_connector._SignalConnector",
        "register_signal_handlers",
        "write",
        "Lightning installs its SIGTERM handler once a run has set up, over theworld's: in a job of several ranks it "
        "broadcasts the signal from inside the handler, which fails with a traceback once another rank has "
        "stopped, and it leaves the stop to its own checks (exit 0 in start-up). A no-op registration keeps "
        "theworld's handlers, which stop every rank with 128 + the signal: there is no public off switch",
    ),
    # TheWorldModule (theworld/lit/module.py)
    PrivateAccess(
        _TRAINER,
        "_logger_connector",
        "read",
        "its should_update_logs says whether the loggers write this step, as LearningRateMonitor asks it; "
        "log_every_n_steps alone misses its step counter and should_stop. Called (on_batch_end, "
        "update_train_step_metrics) to log the step a signal stops at: there is no public 'log this step now'",
    ),
    PrivateAccess(
        "lightning.pytorch.loops._TrainingEpochLoop",
        "_batches_that_stepped",
        "write",
        "the step metrics are logged at; a revalidation after resume takes back the one it adds: no public setter",
    ),
    PrivateAccess(
        _FIT_LOOP_STATE,
        "epoch_loop.val_loop.batch_progress",
        "checkpoint key",
        "marked mid-validation in a checkpoint so that the resume step's validation runs again: loop "
        "progress has no public restart API",
    ),
    PrivateAccess(
        _FIT_LOOP_STATE,
        "state_dict.combined_loader",
        "checkpoint key",
        "the data loader's position, which Lightning saves for rank 0 only: each rank's is swapped in",
    ),
    # TheWorldFSDPStrategy (theworld/lit/strategies.py)
    PrivateAccess(
        "lightning.pytorch.strategies.FSDPStrategy",
        "_setup_model",
        "override",
        "where FSDP wraps the model: overridden to name the CPU device (Lightning passes none)",
    ),
    # TheWorldCLI (theworld/lit/cli.py)
    PrivateAccess(
        "lightning.pytorch.cli.LightningCLI",
        "_parser",
        "call",
        "the subcommand's parser, to dump its config (redacted): LightningCLI exposes the top one only",
    ),
)

# The methods TheWorld overrides, where they are: {(file under theworld/, method name)}.
OVERRIDES = frozenset(
    {
        ("callbacks/checkpoint.py", "_save_topk_checkpoint"),
        ("callbacks/checkpoint.py", "_link_checkpoint"),
        ("callbacks/checkpoint.py", "_find_last_checkpoints"),
        ("lit/strategies.py", "_setup_model"),
    }
)


# ---------------------------------------------------------------- ModelCheckpoint
def monitor_candidates(callback: ModelCheckpoint, trainer: L.Trainer) -> dict[str, torch.Tensor]:
    """The metrics a save is ranked and named by (why: no public builder of ModelCheckpoint's candidates)."""
    return callback._monitor_candidates(trainer)


def save_topk(callback: ModelCheckpoint, trainer: L.Trainer, candidates: dict[str, torch.Tensor]) -> None:
    """Saves now as a scheduled save would, rotating per save_top_k (why: no public 'save now')."""
    callback._save_topk_checkpoint(trainer, candidates)


def save_last(callback: ModelCheckpoint, trainer: L.Trainer, candidates: dict[str, torch.Tensor]) -> None:
    """Points ``last`` at the newest save, per save_last (why: no public equivalent)."""
    callback._save_last_checkpoint(trainer, candidates)


def last_global_step_saved(callback: ModelCheckpoint) -> int:
    """The step ``callback`` saved last (why: no public property)."""
    return callback._last_global_step_saved


# ---------------------------------------------------------------- the launcher
def stop_watching_child_ranks(forward: int | None = None) -> None:
    """Stops the watch of Lightning's subprocess launcher over the child ranks (see PRIVATE_ACCESSES), in a process
    that is stopping: each rank exits with the stop's status, and the watch would SIGKILL rank 0 for it before it
    has saved and said so. ``forward``: a signal sent on to the child ranks still running, as Lightning's own
    SIGTERM handler does (a SIGTERM to rank 0 alone stops the job). Nothing to do in a process that launched no
    rank, nor the second time."""
    launcher = sys.modules.get("lightning.fabric.strategies.launchers.subprocess_script")
    if launcher is None:
        return
    for thread in threading.enumerate():
        if isinstance(thread, launcher._ChildProcessObserver):
            # its next check finds every child done, and the watch ends
            children, thread._child_processes = thread._child_processes, []
            for child in children:
                if forward is not None and child.poll() is None:
                    child.send_signal(forward)


def leave_signals_to_theworld(trainer: L.Trainer) -> None:
    """Keeps Lightning from installing its SIGTERM (and SLURM requeue) handlers when a run starts (see
    PRIVATE_ACCESSES): :mod:`theworld.stops` and TrainableCheckpoint handle the stop signals for the run's whole
    life. Call it before ``Trainer._run`` registers them (a callback's ``setup``)."""
    connector = trainer._signal_connector
    connector.register_signal_handlers = lambda: None  # type: ignore[method-assign]


# ---------------------------------------------------------------- Trainer
def cluster_environment(trainer: L.Trainer) -> ClusterEnvironment:
    """The cluster environment Lightning's own SLURM signal handling reads (why: the strategy holds it on parallel
    strategies only; the Trainer does not expose it)."""
    return trainer._accelerator_connector.cluster_environment


def should_update_logs(trainer: L.Trainer) -> bool:
    """Whether the loggers write this step (why: no public property; LearningRateMonitor asks the same)."""
    return trainer._logger_connector.should_update_logs


def log_this_step(trainer: L.Trainer) -> None:
    """Logs the current step's metrics now, as the training loop does right after ``on_train_batch_end``: for a stop
    raised in that hook, whose step would otherwise miss its row (why: no public 'log this step now')."""
    trainer._logger_connector.on_batch_end()
    trainer._logger_connector.update_train_step_metrics()


def take_back_logged_step(trainer: L.Trainer) -> None:
    """Undoes the one logging step a validation-only loop iteration adds (why: the counter has no public setter)."""
    trainer.fit_loop.epoch_loop._batches_that_stepped -= 1


# ---------------------------------------------------------------- the loops' state in a checkpoint
def validation_progress(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The fit loop's validation batch progress in ``checkpoint`` (why: the loops' checkpoint layout is Lightning's
    own), or None when it has none."""
    return checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.val_loop.batch_progress")


def mark_validation_started(progress: dict[str, Any]) -> None:
    """Marks one validation batch started and none processed: Lightning's test for a validation to run again on
    restart (why: loop progress has no public restart API)."""
    total = progress["total"]
    total["ready"] = total["started"] = total["completed"] + 1


def loader_state(checkpoint: dict[str, Any]) -> Any:
    """The (rank 0) data loader position Lightning saved in ``checkpoint``, or None (why: its own layout)."""
    return checkpoint["loops"]["fit_loop"]["state_dict"].get("combined_loader")


def set_loader_state(checkpoint: dict[str, Any], state: Any) -> None:
    """Replaces the data loader position Lightning restores from ``checkpoint`` (why: its own layout)."""
    checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] = state


# ---------------------------------------------------------------- LightningCLI
def subcommand_parser(cli: LightningCLI, subcommand: str | None) -> LightningArgumentParser:
    """The parser of ``subcommand`` (the top-level one for None) (why: LightningCLI exposes ``parser`` only)."""
    return cli._parser(subcommand)
