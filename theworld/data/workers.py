"""How DataLoader workers start and which signals they obey: every loader of theworld takes its options from here.

**Started from a forkserver, never forked from the trainer.** The trainer runs threads (the Hub uploader, the
checkpoint writer, W&B, an import in progress) that may hold any lock (the import lock, huggingface_hub's client
lock, a connection pool's lock) at the instant a worker is forked; a forked child inherits that lock held by a
thread it does not have, and waits forever. Workers are forked instead by multiprocessing's forkserver, a
single-threaded process started once (by exec, not fork) that has already imported what workers need
(:mod:`theworld.data.forkserver_preload`), so a worker starts in milliseconds plus the unpickling of its dataset.
The forkserver and multiprocessing's resource tracker are started with the job's signals blocked, so a signal
sent to the whole job does not end them either.

**Deaf to the job's signals, not to their loader.** SLURM, ``timeout``, systemd and Ctrl-C signal every process of
the job; a worker that died of it would fail the batch the trainer fetches before it saves and stops. A worker
blocks SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 and a thread of its own reads them with ``sigwaitinfo``, which names the
sender: the trainer's own SIGTERM (the loader's ``terminate()`` of a worker that did not stop in time) ends the
worker at once; anyone else's is ignored. Workers still end with the loader (its shutdown message) and with the
trainer (PyTorch's worker watchdog sees the forkserver, their parent, exit when the trainer's end closes its pipe,
or when the trainer is killed: the forkserver asks for a parent-death signal,
:mod:`theworld.data.forkserver_preload`).

Example::

    DataLoader(dataset, num_workers=4, **worker_options())
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
from functools import partial
from multiprocessing import resource_tracker
from typing import Any

from theworld import stops

# Ctrl-C, preemption and time limits, and the signals SLURM sends before the limit (``--signal=USR1@90``): their
# default action ends a process.
JOB_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2}
# What the forkserver imports before it forks a worker (`__main__` keeps multiprocessing's default).
PRELOAD = ["__main__", "theworld.data.forkserver_preload"]


def worker_options(num_workers: int | None = None) -> dict[str, Any]:
    """``DataLoader`` keywords for theworld's loader workers; none when ``num_workers`` is 0 (no worker)."""
    if num_workers == 0:
        return {}
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    # A stop that comes meanwhile waits until both are started, rather than leaving one half-started (its handler
    # runs in this thread whichever thread the kernel gave the signal to: blocking it here is not enough).
    with stops.held():
        _start_forkserver()
    return {"multiprocessing_context": context, "worker_init_fn": partial(obey_only_the_trainer, os.getpid())}


def _start_forkserver() -> None:
    """Starts (if not yet) the forkserver and multiprocessing's resource tracker with the job's signals blocked: both
    start by exec, and they and the workers forked from the forkserver keep that mask, so no signal meant for the
    job ends them."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, JOB_SIGNALS)
    try:
        # The tracker first: its start unblocks SIGINT and SIGTERM when it is done (CPython's resource_tracker), so
        # started inside the forkserver's start it would leave the forkserver and its workers open to them.
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, JOB_SIGNALS)
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def obey_only_the_trainer(trainer_pid: int, worker_id: int) -> None:
    """``worker_init_fn``: from now on, the job's signals end this worker only when ``trainer_pid`` sent them."""
    if not hasattr(signal, "sigwaitinfo"):  # macOS: no sender to read; ignore Ctrl-C at least, as before
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, JOB_SIGNALS)  # threads started later (downloads) inherit the mask
    threading.Thread(target=_read_signals, args=(trainer_pid,), name="theworld-worker-signals", daemon=True).start()


def _read_signals(trainer_pid: int) -> None:
    while True:
        info = signal.sigwaitinfo(JOB_SIGNALS)
        if info.si_pid == trainer_pid:
            os._exit(128 + info.si_signo)  # what the default action reports to a shell; nothing to clean up
