"""Seconds from typing a `theworld` command to its answer, against `import lightning.pytorch` alone.

A LightningCLI cannot answer before Lightning is imported, so that import is the floor. Each command runs
``--repeats`` times (default 5) as its own process, in one run, interleaved with the floor; the figure is the
median, and the ratio is median / median of the floor. Beside the wall time, the CPU time the process used (user +
system): other work on the machine stretches the wall time of a run by seconds, its CPU time far less. The errors
are the ones a new user makes first:

- ``help``: ``theworld --help``
- ``config_typo``: ``theworld fit --config configs/demo.yaml --trainer.max_stepz 3`` (exit 2)
- ``missing_config``: ``theworld fit --config nowhere.yaml`` (exit 2)
- ``bad_hub_token``: a push to a local Hub with a token it rejects (exit 1)
- ``missing_model_folder``: ``--model.gemma_model_name demo_assets/gemma-nope`` (exit 1)
- ``batch_size_zero``: ``--data.batch_size 0`` (exit 2)
- ``no_shards``: ``--data.train_data nowhere/*.tar`` (exit 1)

Goal: ratio <= 1.15 for help and the config mistakes (config_typo, batch_size_zero: only the subcommand asked for
has its parser built), <= 1.3 for every error. Prints one JSON line per command and a summary line.

With ``--baseline DIR`` (a folder holding another version's ``theworld/``, e.g. ``git archive HEAD~1 theworld | tar
-x -C DIR``) each command also runs as ``NAME@baseline`` with that version, interleaved with this checkout's runs.

    python bench/cli_startup.py [--repeats 5] [--only config_typo missing_config ...] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from hub_server import HubServer  # noqa: E402

from theworld.testing.demo_assets import write_demo_assets  # noqa: E402

GOOD_TOKEN, BAD_TOKEN = "hf_bench_writer_token", "hf_bench_rejected_token"


def commands(demo: str) -> dict[str, tuple[list[str], int]]:
    """name -> (argv after `python`, expected exit code)."""
    cli = ["-m", "theworld.lit.cli"]
    fit = [*cli, "fit", "--config", str(REPO / "configs/demo.yaml")]
    return {
        "floor": (["-c", "import lightning.pytorch"], 0),
        "help": ([*cli, "--help"], 0),
        "config_typo": ([*fit, "--trainer.max_stepz", "3"], 2),
        "missing_config": ([*cli, "fit", "--config", "nowhere.yaml"], 2),
        "bad_hub_token": ([*fit, "--hub.push_to_hub", "true", "--hub.hub_model_id", "bench/x", "--hf_token", BAD_TOKEN],
                          1),
        "missing_model_folder": ([*fit, "--model.gemma_model_name", "demo_assets/gemma-nope"], 1),
        "batch_size_zero": ([*fit, "--data.batch_size", "0"], 2),
        "no_shards": ([*fit, "--data.train_data", "nowhere/*.tar"], 1),
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: list[str], cwd: str, env: dict) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, exit code, stderr) of ``python <argv>``."""
    start, cpu = time.perf_counter(), children_cpu()
    result = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - start, children_cpu() - cpu, result.returncode, result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="+", help="these commands only (and the floor)")
    parser.add_argument("--baseline", help="a folder with another version's theworld/ to run each command with too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work, HubServer({GOOD_TOKEN: {"user": "bench", "role": "write"}}) as hub:
        write_demo_assets(Path(work) / "demo_assets", train_shards=1, samples_per_shard=16)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(Path(work) / "hf"),
               "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}  # this checkout's theworld, whatever is installed
        env.pop("HF_TOKEN", None)
        wanted = {"floor", *(args.only or commands(work))}
        todo = {name: (*cmd, env) for name, cmd in commands(work).items() if name in wanted}
        if args.baseline:
            baseline_env = {**env, "PYTHONPATH": str(Path(args.baseline).resolve())}
            todo.update({f"{name}@baseline": (argv, code, baseline_env) for name, (argv, code, _) in todo.items()
                         if name != "floor"})
        seconds: dict[str, list[float]] = {name: [] for name in todo}
        cpu_seconds: dict[str, list[float]] = {name: [] for name in todo}
        for _ in range(args.repeats):  # interleaved, so load changes hit every command alike
            for name, (argv, expected, run_env) in todo.items():
                took, cpu, code, stderr = run_once(argv, work, run_env)
                if code != expected:
                    raise SystemExit(f"{name}: exit {code}, expected {expected}:\n{stderr[-2000:]}")
                seconds[name].append(took)
                cpu_seconds[name].append(cpu)
    floor, cpu_floor = statistics.median(seconds["floor"]), statistics.median(cpu_seconds["floor"])
    summary = {"floor_s": round(floor, 2), "floor_cpu_s": round(cpu_floor, 2)}
    for name, values in seconds.items():
        median, cpu = statistics.median(values), statistics.median(cpu_seconds[name])
        print(json.dumps({"name": name, "median_s": round(median, 2), "ratio": round(median / floor, 3),
                          "cpu_s": round(cpu, 2), "cpu_ratio": round(cpu / cpu_floor, 3),
                          "runs_s": [round(v, 2) for v in values]}), flush=True)
        if name != "floor":
            summary[f"{name}_ratio"] = round(median / floor, 3)
            summary[f"{name}_cpu_ratio"] = round(cpu / cpu_floor, 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
