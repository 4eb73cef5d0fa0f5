"""Loader workers (theworld/data/workers.py): they start while other threads of the trainer hold locks, and they
obey SIGINT/SIGTERM only from their trainer. The whole-run behaviour (a signal to the process group saves and
resumes exactly) is tested in test_resume.py and test_ddp.py."""

import signal
import subprocess
import sys
from pathlib import Path

from support.accounts import ALICE
from support.cli_runs import theworld
from torch.utils.data import DataLoader, IterableDataset

from theworld.data.workers import worker_options

STRESS = Path(__file__).parent / "support/worker_start_stress.py"


def stress(hub, rounds: int, *flags):
    return theworld(hub.url, ALICE, rounds, *flags, cwd=Path.cwd(), program=[sys.executable, STRESS], timeout=300)


def test_workers_start_while_the_trainer_holds_the_locks_they_need(hub):
    """Round after round, an import, huggingface_hub's client lock and a checkpoint write are in progress on other
    threads while workers start: every round runs. Forked from the trainer as before, the first round hangs."""
    result = stress(hub, 5)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:5] == [f"round {n} ok" for n in range(5)]

    forked = stress(hub, 1, "--fork")
    assert forked.returncode != 0 and "round 0 ok" not in forked.stdout
    assert "DataLoader timed out" in forked.stderr, forked.stderr[-3000:]


class Endless(IterableDataset):
    def __iter__(self):
        n = 0
        while True:
            yield n
            n += 1


def test_a_worker_ignores_the_jobs_signals_and_obeys_its_trainer():
    """SIGTERM and SIGINT from elsewhere (a scheduler, a shell's kill, a terminal) leave a worker serving; the
    trainer's own SIGTERM (the loader stopping a worker that did not end in time) ends it at once."""
    batches = iter(DataLoader(Endless(), batch_size=2, num_workers=1, **worker_options()))
    first = next(batches)
    worker = batches._workers[0]
    for signum in (signal.SIGTERM, signal.SIGINT):
        subprocess.run(["kill", f"-{signum.name.removeprefix('SIG')}", str(worker.pid)], check=True)
    worker.join(timeout=1)
    assert worker.is_alive()
    assert next(batches).tolist() == (first + 2).tolist(), "the worker goes on where it was"

    worker.terminate()
    worker.join(timeout=30)
    assert worker.exitcode == 128 + signal.SIGTERM
