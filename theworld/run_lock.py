"""One run at a time per checkpoint folder: ``theworld fit`` holds ``<folder>.lock`` (an ``fcntl.flock``) for as long
as it lives. Two runs writing the same folder rotate away each other's checkpoints and provenance; the second one
stops at once, naming the process that holds the folder. The kernel drops the lock when its process ends, however it
ends (SIGKILL, OOM), so a dead run leaves nothing stuck: the file stays, stale, and the next run takes it over."""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import IO

from theworld.errors import UserError


class FolderInUse(UserError):
    """Another live run holds the checkpoint folder."""


def lock_path(folder: str | Path) -> Path:
    """Beside the folder, not in it: a run stopped before its first save leaves no checkpoint folder behind."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}.lock"


def hold_run_folder(folder: str | Path, option: str) -> IO[str]:
    """Takes ``folder``'s lock for this process (its parent must be writable); keep the returned file open for the
    run's lifetime. Raises FolderInUse, naming the holder and ``option`` (the way to another folder), when a live
    process has it."""
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "a process that has not written its name yet"
        handle.close()
        raise FolderInUse(
            f"{Path(folder).absolute()} is in use by another run: {holder}. Two runs in one folder rotate away each "
            f"other's checkpoints and provenance. Wait for that run to end, or give this one its own folder with "
            f"{option}."
        ) from None
    handle.seek(0)
    handle.truncate()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    command = shlex.join(["theworld", *sys.argv[1:]])
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started} ({command})\n")
    handle.flush()
    return handle
