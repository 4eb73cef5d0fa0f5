"""The background uploader: one thread, a latest-wins slot, a stop flag (modelled on huggingface_hub's
``CommitScheduler``).

While a push runs, a newer one replaces the queued one (the push in flight gives up its retries for it); the
final push is never replaced, since nothing is queued after it. What a push does is the caller's ``push``
function; this module only schedules, counts and reports. No exception of a push ends the thread: not even a
``KeyboardInterrupt``, which huggingface_hub re-raises in the thread that uploads when hf_xet sees the process's
SIGINT.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from theworld.retry import describe_error

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Push:
    """One commit to make: ``folder`` holds the staged files laid out as in the repo. ``result`` gets the commit."""

    step: int
    folder: Path
    final: bool
    size: int  # bytes to send, counted when staged (the folder goes away once pushed)
    result: Future = dataclasses.field(default_factory=Future)

    @property
    def message(self) -> str:
        return "End of training" if self.final else f"Training in progress, step {self.step}"


def duration(seconds: float) -> str:
    """``3 min 5 s`` for a person reading a log."""
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


class Uploader:
    """One daemon thread pushing the newest queued job. A newer job replaces a queued (not started) one.

    The final job is never replaced (nothing is queued after it). Counters are read by the main thread.
    """

    def __init__(
        self, push: Callable[[Push, Callable[[float], bool]], Any], on_stopped: Callable[[], Any] = lambda: None
    ):
        """``push(job, sleep)`` makes the commit; ``on_stopped`` runs on the thread once it has stopped (after the
        push in flight, however long that takes), e.g. to remove the staging folder the pushes read from."""
        self._push = push
        self._on_stopped = on_stopped
        self._cond = threading.Condition()
        self._queued: Push | None = None
        self._running: Push | None = None
        self._stopped = False
        self.done = self.failed = self.superseded = 0
        self.last_seconds: float | None = None
        self.last_error: str | None = None  # of any attempt, for the final error message
        self._running_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="theworld-hub-sync", daemon=True)
        self._thread.start()

    def submit(self, job: Push) -> None:
        replaced: Push | None
        with self._cond:
            if self._stopped:
                replaced = job
            else:
                replaced, self._queued = self._queued, job
                self._cond.notify_all()
        if replaced is not None:
            self._discard(replaced)

    @property
    def pending(self) -> int:
        """Pushes queued or in flight."""
        with self._cond:
            return (self._queued is not None) + (self._running is not None)

    def wait_idle(self, timeout: float) -> bool:
        """Blocks until nothing is queued or running (True), or ``timeout`` seconds pass (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._queued is None and self._running is None, timeout=timeout)

    def running_since(self) -> float:
        with self._cond:
            return self._running_since if self._running_since is not None else time.monotonic()

    def status(self) -> str | None:
        """One line about the push in flight (None when idle): which, since when, how much, the last error."""
        with self._cond:
            job, since = self._running, self._running_since
        if job is None or since is None:
            return None
        seconds = time.monotonic() - since
        started = time.strftime("%H:%M:%S", time.localtime(time.time() - seconds))
        line = (
            f"Hub push '{job.message}' running since {started} ({duration(seconds)}; {job.size / 1e6:.1f} MB to send)"
        )
        return f"{line}; last error: {self.last_error}" if self.last_error else line

    def stop(self, wait_s: float = 0.0) -> None:
        """Stops after the push in flight (its retries are abandoned); a queued push is dropped. Waits up to
        ``wait_s`` for the thread to end (and run ``on_stopped``): the thread is a daemon, which the process's exit
        would end mid-cleanup."""
        with self._cond:
            self._stopped = True
            queued, self._queued = self._queued, None
            self._cond.notify_all()
        if queued is not None:
            self._discard(queued)
        self._thread.join(wait_s)

    def _discard(self, job: Push) -> None:
        with self._cond:
            self.superseded += 1
        job.result.cancel()
        shutil.rmtree(job.folder, ignore_errors=True)

    def _give_up(self, job: Push) -> bool:
        # Called with the lock held: stop, or an intermediate push that a newer one makes pointless.
        return self._stopped or (self._queued is not None and not job.final)

    def _backoff(self, job: Push) -> Callable[[float], bool]:
        def sleep(delay: float) -> bool:
            with self._cond:
                return self._cond.wait_for(lambda: self._give_up(job), timeout=delay)

        return sleep

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._on_stopped()

    def _serve(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or self._queued is not None)
                if self._stopped:
                    return
                job, self._queued, self._running = self._queued, None, self._queued
                assert job is not None  # the wait above returns on stop (handled) or a queued job
                self._running_since = start = time.monotonic()
            try:
                outcome = self._push(job, self._backoff(job))
            except BaseException as err:  # the thread outlives any push: the next one, the final one, still runs
                with self._cond:
                    superseded = self._give_up(job) and not self._stopped
                    self.superseded += superseded
                    self.failed += not superseded
                if superseded:
                    log.info("Hub push '%s' abandoned (%s): a newer one is queued", job.message, describe_error(err))
                else:
                    log.warning("Hub push '%s' failed: %s", job.message, describe_error(err))
                job.result.set_exception(err)
            else:
                with self._cond:
                    self.done += 1
                    self.last_seconds = time.monotonic() - start
                job.result.set_result(outcome)
            finally:
                with self._cond:
                    self._running = self._running_since = None
                    self._cond.notify_all()
                shutil.rmtree(job.folder, ignore_errors=True)
