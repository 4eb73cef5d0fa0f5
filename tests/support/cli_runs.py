"""`theworld` as a subprocess, and comparing the weights two runs end with."""

import atexit
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from support.cli_zygote import Zygote

from theworld.provenance import provenance_dataset

REPO = Path(__file__).resolve().parents[2]
SHORT = ["--trainer.max_steps", "8", "--checkpoint.every_n_train_steps", "4", "--trainer.val_check_interval",
         "100", "--checkpoint.save_top_k", "-1", "--data.batch_size", "8"]


CLI = [sys.executable, "-m", "theworld"]
SPY = [sys.executable, REPO / "tests/support/weight_spy.py"]
# Set in each forked run, not in its zygote: read when used (huggingface_hub's token, wandb's folder, the weight
# spy's log), or by no one.
PER_RUN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_DIR", "THEWORLD_WEIGHT_LOG", "PYTEST_CURRENT_TEST")
# Zygotes by the environment their runs share at import time, newest use last; each holds about 0.5 GB (torch,
# transformers, Lightning imported), so a test process keeps two at most.
_zygotes: dict[tuple, Zygote] = {}
MAX_ZYGOTES = 2


def theworld(*args, cwd, env=None, program=None, fresh_interpreter=False, spy_weights=False, timeout=600, **popen):
    """`theworld <args>` in ``cwd`` as its own process, the one way every test starts the CLI.

    ``env`` is laid over this process's environment (a None value removes the variable); theworld is imported from
    this checkout, and tests/support is importable (test callbacks: ``--trainer.callbacks+=module.Class``).
    Returns the finished run with its ``.seconds``, as ``subprocess.run(capture_output=True, text=True)`` does.
    ``spy_weights``: the run records its weight loads in $THEWORLD_WEIGHT_LOG (support/weight_spy.py).

    The run is forked from a zygote that has imported theworld (support/cli_zygote.py), unless it is started by
    exec: with ``fresh_interpreter`` (the tests of start-up, signals and kills), a ``program`` replacing
    ``python -m theworld`` (torchrun, and Lightning's DDP launcher, which starts its ranks by running the command
    line again: a forked run has none), or ``popen`` keywords (``stdout=``...: then the running Popen is
    returned)."""
    # theworld from this checkout (whatever is installed), and the test callbacks
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests/support"), str(REPO)])}
    for name, value in (env or {}).items():
        full_env.pop(name, None) if value is None else full_env.__setitem__(name, str(value))
    if not (fresh_interpreter or program or popen):
        per_run = {name: full_env.get(name) for name in PER_RUN_ENV}
        return _zygote(full_env, spy_weights).run(args, cwd, per_run, timeout)
    cmd = [*map(str, program or (SPY if spy_weights else CLI)), *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=full_env, **popen)
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    result.seconds = time.monotonic() - start
    return result


def _zygote(full_env: dict, spy_weights: bool) -> Zygote:
    """The zygote whose environment is ``full_env`` but for the per-run variables, spying on weight loads or not;
    started if there is none."""
    shared = {name: value for name, value in full_env.items() if name not in PER_RUN_ENV}
    key = (spy_weights, *sorted(shared.items()))
    zygote = _zygotes.pop(key, None)
    if zygote is None:
        if len(_zygotes) == MAX_ZYGOTES:
            _zygotes.pop(next(iter(_zygotes))).close()
        zygote = Zygote({name: shared.get(name) for name in {*os.environ, *shared}}, spy_weights=spy_weights)
    _zygotes[key] = zygote
    return zygote


@atexit.register
def _close_zygotes() -> None:
    while _zygotes:
        _zygotes.popitem()[1].close()


def fit(cwd, *args, **kwargs):
    """`theworld fit --config configs/demo.yaml <args>`: see :func:`theworld`."""
    return theworld("fit", "--config", REPO / "configs/demo.yaml", *args, cwd=cwd, **kwargs)


def assert_same_weights(a: Path, b: Path):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6), key


def provenance(folder: Path) -> list[tuple[int, int, str]]:
    """The (step, rank, key) rows of a checkpoint folder's provenance, as the README's reader reads them."""
    table = provenance_dataset(folder).to_table()
    return list(zip(*(table[column].to_pylist() for column in ("step", "rank", "key"))))


def logged_losses(run_dir: Path) -> dict[int, float]:
    """``train/loss`` by step, as the newest run under ``run_dir`` logged it (its own metrics.csv)."""
    metrics = max(Path(run_dir).glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    with open(metrics) as fh:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")}


def assert_resumed(run_dir: Path, straight_run: Path, from_step: int, to_step: int = 8) -> None:
    """The newest run under ``run_dir`` continued after step ``from_step`` (not from 0) and trained exactly the steps
    up to ``to_step``, with the per-step losses of the uninterrupted run."""
    resumed, straight = logged_losses(run_dir), logged_losses(straight_run)
    assert sorted(resumed) == list(range(from_step, to_step)), f"trained steps {sorted(resumed)}"
    for step, loss in resumed.items():
        assert abs(loss - straight[step]) <= 1e-5, (step, loss, straight[step])


def loader_workers(pid: int) -> list[int]:
    """The PIDs of the processes in ``pid``'s session other than ``pid`` itself (its loader workers, and whatever
    starts them), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == pid and int(stat.parent.name) != pid:  # field 6 of stat: the session id
            found.append(int(stat.parent.name))
    return found


def assert_ended(pids: list[int], wait_s: float = 30) -> None:
    """Every process in ``pids`` ends within ``wait_s`` (a bound for a busy machine, not a speed target): the
    workers of a run end with it, also when it stopped for a signal they ignored."""
    deadline = time.monotonic() + wait_s
    while (alive := [pid for pid in pids if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                for pid in alive if Path(f"/proc/{pid}").exists()]
    assert not commands, f"processes outlived the run: {commands}"
