"""``HubSyncCallback``: pushes trainable-only checkpoints to the Hugging Face Hub in the background.

Repo layout, per ``hub_strategy`` (every push is one commit: adds and deletes together)::

    model.safetensors, config.json      latest trainable weights + config          every push
    README.md                           model card: results, curve, samples        every push
    loss_curve.png, samples/            loss curve; held-out images + captions     every push (replaced)
    runs/                               TensorBoard events (hub.push_logs)         every push (replaced)
    training_args.json                  the resolved run config, secrets removed   every push
    data_yield.json                     records read, trained on, skipped (why)    every push
    last-checkpoint/                    full resumable state, replaced each push   Strategy.last_checkpoint
    checkpoint-{step}/                  each local checkpoint, pruned like local   Strategy.checkpoint_folders
    final/model.safetensors, config.json                                           end of training, always
    provenance/                         the deltas the pushed provenance.json files name: those the Hub
                                        lacks are sent, none is deleted (theworld.provenance)

With ``hub_revision`` every commit goes to that branch instead of main. The strategies are the table
:data:`~theworld.hub.strategies.STRATEGIES`; what a push holds and what its commit sends and deletes are the pure
functions :func:`~theworld.hub.commits.repo_files` and :func:`~theworld.hub.commits.plan_commit`.

:class:`~theworld.callbacks.TrainableCheckpoint` announces each complete folder as a
:class:`~theworld.layout.SavedCheckpoint`; its files are hardlinked into a private staging folder
(on the checkpoint writer thread, in order with the writer's rotation deletes) and the push goes to the
:class:`~theworld.hub.uploader.Uploader`. The model card is written from the module's
:class:`~theworld.run_summary.RunSummary`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelInfo,
    constants,
)
from lightning.pytorch.callbacks import Callback

from theworld.hub.card import card_from_summary
from theworld.hub.commits import plan_commit, repo_files
from theworld.hub.config import HubConfig
from theworld.hub.errors import HubError, HubUnreachableError, explain
from theworld.hub.preflight import preflight
from theworld.hub.refs import validate_repo_id
from theworld.hub.report import report_files
from theworld.hub.session import bound_hub_requests
from theworld.hub.strategies import STRATEGIES
from theworld.hub.tokens import HubToken, redact, resolve_token
from theworld.hub.uploader import Push, Uploader, duration
from theworld.layout import FINAL_DIR, PROVENANCE_DIR, WEIGHTS_NAME, SavedCheckpoint
from theworld.provenance import read_history
from theworld.retry import describe_error, http_status, with_retries
from theworld.stops import RunStopped

if TYPE_CHECKING:
    from theworld.lit.module import TheWorldModule

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt inside the block, whatever handler training installed: a second Ctrl-C ends
    a wait at once. Signal handlers belong to the main thread: elsewhere the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


class HubSyncCallback(Callback):
    """Pushes every trainable-only checkpoint to a Hub repo in the background, and ``final/`` at the end.

    Only global rank 0 talks to the Hub. Pushes never block a training step. The end of ``fit`` (and a run stopped
    by SIGINT/SIGTERM) waits, bounded, for the last push and says until when; the end fails if the final push
    cannot land. While a push runs longer than a minute, a line says which, for how long and how big, every minute.
    ``theworld fit`` builds it from the ``hub:`` group; in Python:

    Example:
        >>> trainer = L.Trainer(callbacks=[
        ...     TrainableCheckpoint(every_n_train_steps=500),
        ...     HubSyncCallback(hub_model_id="alice/theworld", hub_strategy="checkpoint"),  # token: $HF_TOKEN
        ... ])
        >>> trainer.fit(module, datamodule=data)

    Metrics (logged from the training loop, never from the uploader thread): ``hub/pushes_done``,
    ``hub/pushes_failed``, ``hub/pushes_superseded``, ``hub/pushes_pending``, ``hub/last_push_seconds``.
    """

    STATUS_EVERY_S = 60.0  # how often a long push is reported
    STOP_WAIT_S = 5.0  # how long the end of a run waits for the uploader's thread to clean up

    def __init__(
        self,
        config: HubConfig | None = None,
        *,
        token: HubToken | None = None,
        api: HfApi | None = None,
        run_config: dict | None = None,
        endpoint: str | None = None,
        max_retries: int = 5,
        retry_wait_s: float = 2.0,
        **hub_options,
    ):
        """
        Args:
            config: The ``hub:`` settings; or give them as keywords (``hub_model_id=...``, every HubConfig field).
            token: An already resolved token; default: ``hf_token`` of the settings, then $HF_TOKEN, then the token
                of ``hf auth login``.
            api: A client that already passed :func:`theworld.hub.preflight` (as ``theworld fit`` does before any
                weight loads); without one, ``setup`` runs the preflight.
            run_config: The resolved run config for ``training_args.json`` (secrets are removed).
            endpoint: The Hub's URL (default: ``HF_ENDPOINT``, else huggingface.co).
            max_retries: Retries of a failing push (5xx, timeouts, dropped connections) before it counts as failed.
            retry_wait_s: First backoff between retries; it doubles each time.
        """
        config = config or HubConfig(**{"push_to_hub": True, **hub_options})
        if config.push_to_hub:
            validate_repo_id(config.hub_model_id)  # a typo fails here, before the Trainer even starts
        self._token = token or resolve_token(config_token=config.hf_token)
        # Kept out of `config` so that nothing that prints or saves the config can show it.
        self.config = dataclasses.replace(config, hf_token=None)
        self.strategy = STRATEGIES[config.hub_strategy]
        self.run_config = redact(run_config) if run_config is not None else None
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.max_retries = max_retries
        self.retry_wait_s = retry_wait_s
        self._api = api
        self._preflighted = api is not None
        self._uploader: Uploader | None = None
        self._lock = threading.Lock()  # staging runs on the checkpoint writer thread, shutdown on the main one
        self._closed = False
        self._staging: Path | None = None
        # Provenance deltas a commit of this session found on the Hub or sent there: they never change, so later
        # pushes do not stage them again (a copy each, where hardlinks fail). Replaced whole by the uploader thread.
        self._deltas_on_hub: frozenset[str] = frozenset()
        self._final: Future | None = None
        self._final_dir: Path | None = None
        self._newest_push: Push | None = None  # of an intermediate save; set on the checkpoint writer thread
        self._last_status = 0.0

    @property
    def _repo_id(self) -> str:
        """``hub_model_id``, which every push path has (it is checked in ``__init__`` when pushing)."""
        repo_id = self.config.hub_model_id
        assert repo_id is not None, "push_to_hub needs hub_model_id"
        return repo_id

    @property
    def repo_url(self) -> str:
        branch = self.config.hub_revision
        return f"{self.endpoint}/{self.config.hub_model_id}" + (f"/tree/{branch}" if branch else "")

    # ------------------------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.config.push_to_hub:
            return
        error = None
        if trainer.is_global_zero:
            try:
                self._start(resuming=trainer.ckpt_path is not None)
            except HubError as err:
                error = err
        # Every rank stops together, and before configure_model loads any weight.
        message = trainer.strategy.broadcast(str(error) if error else None, src=0)
        if error is not None:
            raise error
        if message:
            raise HubError(message)

    def _start(self, resuming: bool) -> None:
        bound_hub_requests(self.config.hub_request_timeout)
        # huggingface_hub warns at every commit of a .parquet file to a model repo; this one belongs there.
        warnings.filterwarnings(
            "ignore",
            rf"It seems that you are about to commit a data file \("
            rf"{re.escape(PROVENANCE_DIR)}/.*\.parquet\)",
        )
        self._uploader = Uploader(self._upload, on_stopped=self._remove_staging)
        self._closed = False
        if self._preflighted:
            return
        try:
            # Short waits: with the Hub down for good, training should not start late.
            self._api = preflight(
                self.config, self._token, self.endpoint, wait_s=min(1.0, self.retry_wait_s), resuming=resuming
            )
        except HubUnreachableError as err:
            # The checks (and the repo creation) run again before the first push; the run fails at the end
            # if the final push cannot land.
            log.warning("%s Training starts anyway; pushes will be retried.", err)

    def on_checkpoint_saved(self, trainer: L.Trainer, saved: SavedCheckpoint) -> None:
        """Stages and queues a push. Intermediate saves call this on the checkpoint writer thread."""
        if self._uploader is None:
            return
        if saved.final:
            self._final_dir = saved.path
            try:
                self._final = self._submit(trainer, saved).result
            except Exception as err:  # reported by on_fit_end like any other failure of the final push
                self._final = Future()
                self._final.set_exception(err)
        elif self.strategy.pushes_intermediate_saves:
            try:
                self._newest_push = self._submit(trainer, saved)
            except Exception as err:  # an intermediate push is optional; the writer thread must not fail
                log.warning(
                    "Could not stage %s for the Hub (%s); the next save will be pushed.",
                    saved.path,
                    describe_error(err),
                )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self._uploader is not None:
            pl_module.log_dict(self.metrics, on_step=True, on_epoch=False, rank_zero_only=True, batch_size=1)
            self._report_stuck_push()

    def _report_stuck_push(self) -> None:
        """A line about a push that has been running a while, at most every ``STATUS_EVERY_S`` (cheap to ask)."""
        now = time.monotonic()
        if now - self._last_status < self.STATUS_EVERY_S:
            return
        assert self._uploader is not None  # called only while the uploader runs
        status = self._uploader.status()
        if status is not None and now - self._uploader.running_since() >= self.STATUS_EVERY_S:
            log.info("%s", status)
            self._last_status = now

    def _wait(self, done: Callable[[float], Any], timeout: float, what: str, ctrl_c_stops: bool = False) -> Any:
        """Waits up to ``timeout`` s for ``done(seconds)``, with a status line every ``STATUS_EVERY_S``."""
        deadline = time.monotonic() + timeout
        log.info(
            "Waiting for %s to %s until %s (at most %s%s)",
            what,
            self.repo_url,
            time.strftime("%H:%M:%S", time.localtime(time.time() + timeout)),
            duration(timeout),
            "; Ctrl-C again stops waiting" if ctrl_c_stops else "",
        )
        while True:
            try:
                return done(max(0.0, min(self.STATUS_EVERY_S, deadline - time.monotonic())))
            except FutureTimeout:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                assert self._uploader is not None  # pushes are only waited for while the uploader runs
                log.info("%s; waiting %s more", self._uploader.status() or "Hub push queued", duration(left))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after TrainableCheckpoint wrote final/ (at the end of training, or at the start of a run resumed
        # after its end) and queued the final push.
        if self._uploader is None:
            return
        if self._final is None:
            log.warning(
                "No final/ folder was announced (is TrainableCheckpoint among the callbacks?): "
                "nothing final to push to %s.",
                self.repo_url,
            )
            self._shutdown()
            return
        timeout = self.config.hub_final_push_timeout
        error = None
        final = self._final
        try:
            commit = self._wait(lambda seconds: final.result(timeout=seconds), timeout, "the final push")
        except FutureTimeout:
            error = f"it did not finish within hub_final_push_timeout={timeout:g} s"
            stuck = self._uploader.status()  # the push in flight (maybe an earlier one), since when, its last error
            if stuck:
                error += f"; {stuck}"
        except Exception as err:
            error = str(err) if isinstance(err, HubError) else describe_error(err)
        self._shutdown()
        for logger in trainer.loggers:
            logger.log_metrics(self.metrics, step=trainer.global_step)
        if error is None:
            log.info("Final weights pushed to %s (commit %s)", self.repo_url, commit[:8])
            return
        assert self._final_dir is not None  # set with self._final
        final_dir = self._final_dir.resolve()
        branch = f" --revision {self.config.hub_revision}" if self.config.hub_revision else ""
        raise HubError(
            f"The final push to the Hub ({self.repo_url}) failed: {error.rstrip('.')}. Training itself finished and "
            f"the local final weights are intact in {final_dir}. Push them when the Hub is reachable with "
            f"`hf upload {self.config.hub_model_id} {final_dir} {FINAL_DIR}{branch}` (and "
            f"`hf upload {self.config.hub_model_id} {final_dir} .{branch}` for the root copy)."
        )

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        newest = self._newest_push
        if isinstance(exception, RunStopped) and exception.saved and self._uploader is not None and newest is not None:
            # The interrupted step's checkpoint is queued: give it the final push's time to land, and say whether
            # it did (its own outcome, not an idle queue: a failed push leaves the queue idle too).
            try:
                with _ctrl_c_raises():
                    commit = self._wait(
                        lambda seconds: newest.result.result(timeout=seconds),
                        self.config.hub_final_push_timeout,
                        "the interrupted run's last push",
                        ctrl_c_stops=True,
                    )
                log.info("The checkpoint of step %d is on %s (commit %s)", newest.step, self.repo_url, commit[:8])
            except KeyboardInterrupt:
                log.warning(
                    "Stopped waiting (Ctrl-C): the push of step %d to %s did not land; the local checkpoint %s is "
                    "intact.",
                    newest.step,
                    self.repo_url,
                    exception.progress.checkpoint,
                )
            except FutureTimeout:
                log.warning(
                    "The last push did not land in time; the local checkpoint %s is intact.",
                    exception.progress.checkpoint,
                )
            except Exception as err:  # it failed, or a newer push replaced it
                log.warning(
                    "The push of step %d to %s did not land (%s); the local checkpoint %s is intact.",
                    newest.step,
                    self.repo_url,
                    describe_error(err),
                    exception.progress.checkpoint,
                )
        self._shutdown()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._shutdown()

    # ------------------------------------------------------------------------- main thread work
    @property
    def metrics(self) -> dict[str, float]:
        """The ``hub/`` counters (rank 0, after setup): pushes done, failed, superseded, pending, last seconds."""
        up = self._uploader
        assert up is not None, "the hub/ counters exist after setup"
        metrics: dict[str, float] = {
            "hub/pushes_done": up.done,
            "hub/pushes_failed": up.failed,
            "hub/pushes_superseded": up.superseded,
            "hub/pushes_pending": up.pending,
        }
        if up.last_seconds is not None:
            metrics["hub/last_push_seconds"] = up.last_seconds
        return {name: float(value) for name, value in metrics.items()}

    def _submit(self, trainer: L.Trainer, saved: SavedCheckpoint) -> Push:
        """Stages the repo files for ``saved`` (hardlinks, no network) and queues the push."""
        with self._lock:
            if self._closed:
                raise HubError("the Hub sync has shut down")
            files = repo_files(self.strategy, saved)
            summary = cast("TheWorldModule", trainer.lightning_module).run_summary(saved.step, saved.final)
            history = read_history(saved.path)  # the card counts the rows, not steps x batch
            summary = dataclasses.replace(summary, provenance_rows=history.rows if history else None)
            written = {
                "README.md": card_from_summary(summary, self._repo_id, self.config.hub_strategy).encode(),
                "training_args.json": self._training_args(trainer).encode(),
                **report_files(summary, push_logs=self.config.push_logs),
            }
            folder = self._stage(saved.path.parent, files, written)
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            push = Push(step=saved.step, folder=folder, final=saved.final, size=size)
            assert self._uploader is not None  # started in setup, before any save is announced
            self._uploader.submit(push)
        log.info("Queued Hub push: %s (%d files)", push.message, len(files) + len(written))
        return push

    def _stage(self, checkpoints: Path, files: dict[str, Path], written: dict[str, bytes]) -> Path:
        """A push's folder: checkpoint files hardlinked (copied where that fails), the card and report files written;
        provenance deltas already on the Hub are left out."""
        if self._staging is None:
            for stale in checkpoints.glob(".hub-staging-*"):  # left by a killed run (hardlinks hold disk space)
                shutil.rmtree(stale, ignore_errors=True)
            self._staging = Path(tempfile.mkdtemp(prefix=".hub-staging-", dir=checkpoints))
        folder = Path(tempfile.mkdtemp(prefix="push-", dir=self._staging))
        try:
            for rel, source in files.items():
                if rel in self._deltas_on_hub:
                    continue
                target = folder / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source, target)  # same bytes, no copy; survives the checkpoint's deletion
                except OSError:
                    shutil.copy2(source, target)  # another filesystem, or no hardlinks there
            for rel, data in written.items():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(data)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    def _training_args(self, trainer: L.Trainer) -> str:
        config = self.run_config
        if config is None:  # used outside the CLI: the module's and datamodule's hyperparameters
            config = redact(
                {
                    "model": dict(trainer.lightning_module.hparams),
                    # Lightning sets Trainer.datamodule in its data connector; the class does not declare it
                    "data": dict(getattr(trainer.datamodule, "hparams", {}) or {}),  # type: ignore[attr-defined]
                    "trainer": {
                        "max_steps": trainer.max_steps,
                        "accumulate_grad_batches": trainer.accumulate_grad_batches,
                    },
                    "hub": dataclasses.asdict(self.config),
                }
            )
        return json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
            uploader = self._uploader
        if uploader is not None:
            # Its thread removes the staging folder (taking the lock) once no push reads from it: at once when
            # idle, as at a clean exit; a push stuck in flight is not waited for longer than this.
            uploader.stop(wait_s=self.STOP_WAIT_S)

    def _remove_staging(self) -> None:
        with self._lock:
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._staging = None

    # ------------------------------------------------------------------------ uploader thread
    def _upload(self, push: Push, sleep: Callable[[float], bool]) -> str:
        uploader = self._uploader
        assert uploader is not None  # this runs on the uploader's own thread

        def attempt():
            try:
                if self._api is None:  # the Hub was unreachable at setup: check (and create the repo) now
                    self._api = preflight(self.config, self._token, self.endpoint, retries=0)
                return self._commit(push)
            except KeyboardInterrupt as err:
                # hf_xet saw the process's SIGINT and huggingface_hub re-raised it here, in the uploading thread;
                # the main thread handles the signal (save, stop), this push is tried again.
                uploader.last_error = "the Xet upload was interrupted by SIGINT"
                raise PushInterrupted(uploader.last_error) from err
            except Exception as err:
                uploader.last_error = describe_error(err)
                raise

        try:
            commit = with_retries(
                attempt,
                what=f"Hub push '{push.message}'",
                retries=self.max_retries,
                wait_s=self.retry_wait_s,
                sleep=sleep,
            )
        except HubError:
            raise
        except Exception as err:
            raise explain(err, self._repo_id, self._token, self.endpoint) from err
        log.info("Pushed to %s: %s (commit %s)", self.repo_url, push.message, commit[:8])
        if push.final and self.config.hub_tag:
            self._tag(commit, sleep)
        return commit

    def _commit(self, push: Push) -> str:
        """One commit from the staged folder, planned against the repo's current head; returns its sha.

        Re-planned on every attempt: if an earlier attempt landed but its answer was lost (a 500 after the
        commit), nothing differs any more and huggingface_hub skips the empty commit instead of duplicating it.
        A final push whose weights are already the repo's ``final/`` (a finished run started again) makes none.
        """
        api, repo_id, branch = self._api, self._repo_id, self.config.hub_revision
        assert api is not None, "setup runs the preflight that gives the client"
        # A model repo (repo_info's default repo_type), whatever union repo_info is annotated with
        info = cast(ModelInfo, api.repo_info(repo_id, revision=branch, files_metadata=push.final))
        assert info.sha is not None  # the Hub always names the head commit
        if push.final and _same_lfs_file(info, f"{FINAL_DIR}/{WEIGHTS_NAME}", push.folder / FINAL_DIR / WEIGHTS_NAME):
            log.info("%s/%s already holds these final weights: nothing to push.", self.repo_url, FINAL_DIR)
            return info.sha
        remote = {sibling.rfilename for sibling in info.siblings or []}
        staged = {p.relative_to(push.folder).as_posix(): p for p in sorted(push.folder.rglob("*")) if p.is_file()}
        plan = plan_commit(self.strategy, remote, staged)
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(p))
            for rel, p in staged.items()
            if rel in plan.send
        ]
        operations += [CommitOperationDelete(path_in_repo=rel, is_folder=False) for rel in plan.delete]
        commit = api.create_commit(
            repo_id, operations, commit_message=push.message, parent_commit=info.sha, revision=branch
        )
        if commit.oid == info.sha:
            log.info("'%s' was already on the Hub (an earlier attempt landed): no new commit", push.message)
        self._deltas_on_hub = frozenset(rel for rel in remote | set(staged) if rel.startswith(f"{PROVENANCE_DIR}/"))
        return commit.oid

    def _tag(self, revision: str, sleep: Callable[[float], bool]) -> None:
        tag, api, repo_id = self.config.hub_tag, self._api, self._repo_id
        assert tag is not None and api is not None  # called for a final push with hub_tag set, after the preflight
        try:
            with_retries(
                lambda: api.create_tag(repo_id, tag=tag, revision=revision),
                what=f"Hub tag {tag!r}",
                retries=self.max_retries,
                wait_s=self.retry_wait_s,
                sleep=sleep,
            )
        except Exception as err:
            if http_status(err) != 409:
                raise
            log.warning("Tag %r already exists on %s and was left where it is.", tag, self.repo_url)
        else:
            log.info("Tagged the final commit %s as %r", revision[:8], tag)


class PushInterrupted(Exception):
    """A push cut short by a ``KeyboardInterrupt`` raised in the uploader thread: worth another try."""

    transient = True


def _same_lfs_file(info, path_in_repo: str, local: Path) -> bool:
    """Whether the repo (``repo_info`` with file metadata) holds ``local``'s bytes at ``path_in_repo``."""
    remote = next((s for s in info.siblings or [] if s.rfilename == path_in_repo), None)
    if remote is None or remote.lfs is None or remote.lfs.size != local.stat().st_size:
        return False
    digest = hashlib.sha256()
    with open(local, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return remote.lfs.sha256 == digest.hexdigest()
