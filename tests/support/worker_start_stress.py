"""Starts loader workers, round after round, while other threads of the trainer hold locks a worker needs.

``python worker_start_stress.py ENDPOINT TOKEN ROUNDS [--fork]``: each round, as in a run whose validation
starts while it pushes, saves and imports, the "uploader" thread is mid-request to the Hub and holds
huggingface_hub's client lock (it does while it builds a client), the "checkpoint writer" thread writes tensors,
and the "importing" thread is inside the import of a module the workers import too. Then a loader with two workers
reads a few batches; its workers import that module and ask huggingface_hub for its client. Prints ``round N ok``
per round. With theworld's worker options the workers are forked by a clean forkserver and every round runs; with
``--fork`` (the start method theworld used before) a worker inherits the held locks and the loader times out.
"""

import importlib
import os
import sys
import tempfile
import threading
from pathlib import Path

import torch
from huggingface_hub import HfApi, get_session
from huggingface_hub.utils import _http
from torch.utils.data import DataLoader, IterableDataset

from theworld.data.workers import worker_options



class NeedsTheLocks(IterableDataset):
    """What a validation worker does first: import (PIL's plugins, a codec) and reach the Hub (datasets streaming)."""

    def __init__(self, module: str):
        self.module = module

    def __iter__(self):
        importlib.import_module(self.module)
        get_session()
        yield from range(4)


def busy_round(n: int, endpoint: str, token: str, modules: Path) -> None:
    module, release = f"imported_in_round_{n}", modules / f"release-{n}"
    # The module's import waits in the trainer process only, until the round's loader is done.
    (modules / f"{module}.py").write_text(
        f"import os, time\nwhile os.getpid() == {os.getpid()} and not os.path.exists({str(release)!r}):\n"
        "    time.sleep(0.01)\n")
    importing = threading.Thread(target=importlib.import_module, args=(module,))
    importing.start()
    while module not in sys.modules:  # the import has begun: its module lock is held
        pass
    done, client_lock_held = threading.Event(), threading.Event()

    def uploader() -> None:
        HfApi(endpoint=endpoint, token=token).whoami()
        with _http._CLIENT_LOCK:
            client_lock_held.set()
            done.wait()

    def checkpoint_writer() -> None:
        while not done.is_set():
            torch.save({"w": torch.randn(256, 256)}, modules / "checkpoint.pt")

    threads = [threading.Thread(target=uploader), threading.Thread(target=checkpoint_writer)]
    for thread in threads:
        thread.start()
    client_lock_held.wait()
    forked = "--fork" in sys.argv  # its hang is certain: a short wait shows it; the forkserver's start may be slow
    options = {"multiprocessing_context": "fork"} if forked else worker_options()
    try:
        batches = list(DataLoader(NeedsTheLocks(module), batch_size=2, num_workers=2, timeout=10 if forked else 60,
                                  **options))
    finally:
        done.set()
        release.touch()
        for thread in [*threads, importing]:
            thread.join()
    assert len(batches) == 4, batches  # two workers, each the whole range
    print(f"round {n} ok", flush=True)


if __name__ == "__main__":  # workers started from the forkserver import this file again, as with spawn
    modules = Path(tempfile.mkdtemp())
    sys.path.insert(0, str(modules))
    for n in range(int(sys.argv[3])):
        busy_round(n, sys.argv[1], sys.argv[2], modules)
