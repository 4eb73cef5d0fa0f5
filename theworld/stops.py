"""How a run ends on a signal, from process start to exit: with the shell's status for that signal (130 for SIGINT,
143 for SIGTERM, 138 for SLURM's requeue signal), never 0, and one line saying what was saved and how to resume.

Inside the training steps :class:`~theworld.callbacks.checkpoint.TrainableCheckpoint` takes SIGINT and SIGTERM over:
it finishes the step, saves it and raises :class:`RunStopped`. Everywhere else (imports, parsing, weight loading,
loader start, the final push, the exit) the handlers installed here raise it at once: nothing was trained since the
last checkpoint, so nothing is lost by not waiting. They are installed before the heavy imports (``theworld``, the
console script, and ``python -m theworld``), so a signal during start-up (10-20 s on 2 cores, again at every
restart) meets neither the default action nor Lightning's SIGTERM handler, which ended such a run with status 0.

    stops.install()                 # first thing in the process
    try:
        run()
    except stops.RunStopped as stop:
        sys.stderr.write(stop.describe(resume_command))
        sys.exit(stop.code)

The module imports nothing heavy: it runs before torch is imported.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from theworld import lightning_private


@dataclass(frozen=True)
class RunProgress:
    """What a stop line reports: the newest checkpoint, kept by the checkpoint callback as the run goes."""

    step: int = 0  # the step of the newest checkpoint (0: none yet)
    checkpoint: Path | None = None  # the newest complete checkpoint folder
    trained_to_end: bool = False  # training reached its end and final/ is written


_progress = RunProgress()


def record_checkpoint(step: int, checkpoint: Path, trained_to_end: bool = False) -> None:
    """The run's newest complete checkpoint (saved, or resumed from): what a stop from now on reports. One
    assignment, so a signal handler never reads a half-updated record (saves are announced on the writer thread)."""
    global _progress
    _progress = RunProgress(step, checkpoint, trained_to_end)


def progress() -> RunProgress:
    """The run's newest complete checkpoint, as last recorded."""
    return _progress


class RunStopped(SystemExit):
    """A run stopped by ``signum``; its exit status is the shell's for that signal (128 + ``signum``).

    ``progress``: the newest checkpoint when it stopped; ``saved``: that checkpoint was written for this stop (the
    step the signal came in). ``unsaved_step``: the step a second Ctrl-C cut short, not saved. ``requeued``: the
    SLURM job id requeued, which then resumes by itself."""

    def __init__(
        self,
        signum: int,
        progress: RunProgress | None = None,
        saved: bool = False,
        unsaved_step: int | None = None,
        requeued: str | None = None,
    ):
        super().__init__(128 + signum)
        self.signum, self.progress, self.saved = signum, progress or _progress, saved
        self.unsaved_step, self.requeued = unsaved_step, requeued

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def describe(self, resume_command: str) -> str:
        """The stop's line(s) for the terminal: what was saved, and how the run goes on."""
        step, checkpoint = self.progress.step, self.progress.checkpoint
        newest = f"the checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written yet"
        if self.saved:
            what = f"after step {step}; {newest}."
        elif self.unsaved_step is not None:
            what = f"a second time, in step {self.unsaved_step}, which is not saved; {newest}"
            what += f" (step {step})." if checkpoint else "."
        elif self.progress.trained_to_end:
            what = (
                f"after training finished at step {step}, while finishing; {newest}, and final/ beside it. The final "
                f"push, if any, may not have landed: resuming pushes what is missing."
            )
        elif checkpoint:
            what = f"before this run trained a step past step {step}: nothing new to save; {newest}."
        else:
            what = "before any step was trained: nothing to save."
        verb = "Resume" if resume_command.startswith("theworld fit") else "Run it again"
        then = (
            f"SLURM requeued job {self.requeued}: it resumes from there when it starts again.\n"
            if self.requeued
            else f"{verb} with:\n  {resume_command}\n"
        )
        return f"theworld: stopped by {self.signal_name} {what} {then}"


def slurm_batch_job() -> bool:
    """Whether this process is a step of a SLURM batch job (not ``srun --pty bash`` nor ``salloc``), where
    Lightning's auto-requeue applies; the test is Lightning's own (``SLURMEnvironment.detect`` and its job name)."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


# SLURM sends SIGUSR1 before a time limit (``#SBATCH --signal=USR1@90``): Lightning's default requeue signal.
REQUEUE_SIGNAL = signal.SIGUSR1


def install() -> None:
    """Handlers for SIGINT and SIGTERM (and, in a SLURM batch job, the requeue signal) that raise
    :class:`RunStopped` where they land. Called again, it re-installs them (after a library replaced them). A signal
    the process was started with ignored (``cmd &`` in a script ignores SIGINT, ``nohup``...) stays ignored, as
    Python leaves it."""
    for signum in _stop_signals():
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _on_signal)
    _watch_arrivals()


def _stop_signals() -> tuple[int, ...]:
    return (signal.SIGINT, signal.SIGTERM, *([REQUEUE_SIGNAL] if slurm_batch_job() else []))


# Signals that came inside held(), delivered when it ends; None outside it.
_held: list[int] | None = None
# The stop raised outside the training steps: a library may catch it and raise something else, or swallow it.
_raised: RunStopped | None = None


def unfinished_stop() -> RunStopped | None:
    """The stop a handler of this module raised, if any: whatever the run ended with after it, it ends as that stop."""
    return _raised


@contextlib.contextmanager
def held() -> Iterator[None]:
    """A stop that comes inside waits until the block is done, then happens: for a start that a stop must not cut
    in half (the loader workers': a worker still starting when its trainer exits prints a traceback). Blocking the
    signals in one thread cannot do this: the kernel hands a process's signal to any thread that does not block it,
    and Python then runs the handler in the main thread wherever it is."""
    global _held
    if _held is not None:  # nested: the outer block delivers
        yield
        return
    _held = []
    try:
        yield
    finally:
        pending, _held = _held, None
        if pending:
            _on_signal(pending[0], None)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _held is not None:
        _held.append(signum)
        return
    if _in_a_finalizer(frame):
        # Python prints and drops an exception raised in a __del__ (a loader iterator shutting its workers down):
        # the signal comes again a moment later, outside it.
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(REQUEUE_SIGNAL, signal.SIG_IGN)
    # A second Ctrl-C while the stop unwinds (a loader's shutdown, a push's wait): the user wants out, now.
    signal.signal(signal.SIGINT, _exit_at_once("again while stopping"))
    global _raised
    _raised = _stop_for(signum)
    raise _raised


def _stop_for(signum: int) -> RunStopped:
    lightning_private.stop_watching_child_ranks(forward=signum if signum == signal.SIGTERM else None)
    return RunStopped(signum, requeued=requeue_slurm_job() if signum == REQUEUE_SIGNAL else None)


# A main thread blocked in C runs no Python signal handler until the call returns, maybe never: torch.distributed's
# rendezvous waiting for a rank that the same SIGTERM has ended, a collective. Lightning's launcher watch meanwhile
# SIGKILLs rank 0 once a child rank has exited. Python's own C handler still writes each signal's number to the
# wakeup fd, where a thread reads it: it ends the launcher's watch (forwarding SIGTERM to the child ranks, as
# Lightning's handler does), and if the main thread has not moved for BLOCKED_GRACE_S while this module's handler
# still waits to run (so outside the training steps, where nothing unsaved is lost), it ends the process as that
# handler would have: the stop line, then the signal's status.
BLOCKED_GRACE_S = 3.0
_wakeup_fds: tuple[int, int] | None = None


def _watch_arrivals() -> None:
    global _wakeup_fds
    if _wakeup_fds is not None or threading.current_thread() is not threading.main_thread():
        return
    read_fd, write_fd = _wakeup_fds = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block on it
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_read_arrivals, args=(read_fd,), name="theworld-stop-signals", daemon=True).start()


def _read_arrivals(read_fd: int) -> None:
    while True:
        try:
            arrived = os.read(read_fd, 64)
        except OSError:  # closed: a forked child's copy
            return
        for signum in arrived:
            if signum in _stop_signals():
                _on_arrival(signum)


def _on_arrival(signum: int) -> None:
    lightning_private.stop_watching_child_ranks(forward=signum if signum == signal.SIGTERM else None)
    where = _main_thread_position()
    deadline = time.monotonic() + BLOCKED_GRACE_S
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if signal.getsignal(signum) is not _on_signal or _held is not None or _main_thread_position() != where:
            return  # the handler ran or will (Python runs in the main thread), or another one took the signal over
    report(_stop_for(signum), sys.argv[1:])
    os._exit(128 + signum)


def _main_thread_position() -> tuple[int, int] | None:
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    return None if frame is None else (id(frame), frame.f_lasti)


def report(stop: RunStopped, argv: list[str]) -> None:
    """Writes ``stop``'s line for the run ``argv`` (the command's arguments) once per job: on rank 0."""
    if rank_zero():
        sys.stderr.write(stop.describe(resume_command(argv)))
        sys.stderr.flush()


def rank_zero() -> bool:
    """Whether this process is the job's rank 0: as Lightning's ``rank_zero_only`` says once Lightning is imported
    (it sets the global rank there), before that as it reads the rank from the environment (a child rank
    Lightning's launcher started may be stopped while it imports)."""
    lightning_rank = sys.modules.get("lightning.fabric.utilities.rank_zero")
    if lightning_rank is not None:
        return getattr(lightning_rank.rank_zero_only, "rank", 0) == 0
    return environment_rank() == 0


def environment_rank() -> int:
    """This process's rank as Lightning reads it from the environment (its ``_get_rank``, checked equal by a unit
    test): torchrun's, Lightning's launcher's, SLURM's, LSF's; 0 when none is set."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if (value := os.environ.get(name)) is not None:
            return int(value)
    return 0


def _forget_arrivals_in_a_forked_child() -> None:
    # The fork has no reading thread, and its signals must not reach the parent's pipe.
    global _wakeup_fds
    if _wakeup_fds is not None:
        signal.set_wakeup_fd(-1)
        for fd in _wakeup_fds:
            os.close(fd)
        _wakeup_fds = None


os.register_at_fork(after_in_child=_forget_arrivals_in_a_forked_child)


def _in_a_finalizer(frame: FrameType | None) -> bool:
    # Besides __del__, finalizers run from weakref callbacks (a semaphore unregistering from the resource tracker);
    # multiprocessing's run only once it is imported, which this module does not do at start-up.
    multiprocessing_util = sys.modules.get("multiprocessing.util")
    finalizer_calls = {weakref.finalize.__call__.__code__}
    if multiprocessing_util is not None:
        finalizer_calls.add(multiprocessing_util.Finalize.__call__.__code__)
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_code in finalizer_calls:
            return True
        frame = frame.f_back
    return False


def exiting(stop: RunStopped | None = None) -> None:
    """From here on (the run's result is decided, the process is exiting) a signal ends the process at once with its
    status, after one line: raising in the interpreter's exit handlers would print a traceback instead. When the
    run ends by ``stop``, its own signal again is a repeat (rank 0 forwards a SIGTERM to the child ranks, which the
    whole-job signal reached too; SLURM may send it twice): ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM, REQUEUE_SIGNAL):
        if stop is not None and signum == stop.signum:
            signal.signal(signum, signal.SIG_IGN)
        elif signal.getsignal(signum) not in (signal.SIG_DFL, None):
            signal.signal(signum, _exit_at_once("while exiting"))


def _exit_at_once(when: str) -> Callable[[int, FrameType | None], None]:
    def exit_now(signum: int, frame: FrameType | None) -> None:
        sys.stderr.write(f"\ntheworld: {signal.Signals(signum).name} {when}: exiting at once.\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    return exit_now


# Flags whose value is the Hub token: never in a line theworld prints.
TOKEN_FLAGS = ("--hf_token", "--hub.hf_token")


def without_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` without ``--flag value`` and ``--flag=value`` for each of ``flags``."""
    kept, skip_value = [], False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg in flags:
            skip_value = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in flags)):
            kept.append(arg)
    return kept


def resume_command(argv: list[str]) -> str:
    """This run's command line without token flags; for ``fit``, with ``--ckpt_path last`` instead of its own."""
    if argv[:1] != ["fit"]:
        return shlex.join(["theworld", *without_flags(argv, TOKEN_FLAGS)])
    kept = without_flags(argv, (*TOKEN_FLAGS, "--ckpt_path", "--resume_from"))
    return shlex.join(["theworld", *kept, "--ckpt_path", "last"])


def requeue_slurm_job() -> str | None:
    """``scontrol requeue`` of this job (of this array task); returns the job id, or None (with a warning) when
    SLURM refused. A requeued job ends and its batch script runs again, and its ``--ckpt_path last`` resumes."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    except FileNotFoundError:
        result = subprocess.CompletedProcess([], 127, stderr="scontrol is not on PATH")
    if result.returncode == 0:
        return job
    sys.stderr.write(
        f"theworld: `scontrol requeue {job}` failed ({result.stderr.strip() or f'exit {result.returncode}'}): "
        "resubmit the job to resume.\n"
    )
    return None
