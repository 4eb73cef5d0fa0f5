"""Runs the reliability suite and writes tests/reliability/REPORT.md with its figures.

    python tests/reliability/report.py          # the fast variants (what CI runs)
    python tests/reliability/report.py --slow   # the fast and the slow variants

The tests append their figures (kills survived, faults injected, bad inputs tried, checkpoints checked) to a
JSON-lines file named by $THEWORLD_RELIABILITY_FIGURES; this script sets it, runs pytest and sums them up.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import torch

FIGURES_ENV = "THEWORLD_RELIABILITY_FIGURES"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def run_suite(slow: bool) -> tuple[list[dict], str, float, int]:
    """(figure rows, pytest's summary line, seconds, exit code)."""
    # `-m reliability` replaces pyproject's `-m 'not slow and not gpu'`, so the slow variants run too.
    cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider",
           *(["-m", "reliability"] if slow else [])]
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.jsonl"
        start = time.monotonic()
        result = subprocess.run(cmd, cwd=REPO, env={**os.environ, FIGURES_ENV: str(figures)}, capture_output=True,
                                text=True)
        seconds = time.monotonic() - start
        rows = [json.loads(line) for line in figures.read_text().splitlines()] if figures.exists() else []
    print(result.stdout[-5000:], result.stderr[-3000:], sep="\n")
    summary = next((line.strip("= ") for line in reversed(result.stdout.splitlines()) if line.strip()), "no output")
    return rows, summary, seconds, result.returncode


def markdown(rows: list[dict], summary: str, seconds: float, exit_code: int, slow: bool) -> str:
    events = defaultdict(list)
    for row in rows:
        events[row["event"]].append(row)
    kills, runs, finals = events["kill"], events["kill_run"], events["final_weights"]
    unloadable = sum(run["unloadable"] for run in runs)
    checked = sum(k["local_checked"] + k["hub_checked"] for k in kills) + sum(
        run["local_checked"] + run["hub_checked"] for run in runs)
    equal = sum(final["equal"] for final in finals)
    # Data is lost if a checkpoint could not be loaded, a killed run ended with other weights (or did not end), or a
    # run restarted from another step than the checkpoint it was resuming (work done again, or skipped).
    restarted = [k for k in kills if k.get("started_at") != k["start_step"]]
    signals, offsets = events["signal"], events["signal_offset"]
    # A signalled run loses data if it did not resume at the step it saved, or trained on with other losses.
    signal_lost = sum(s["resumed_at"] != s["saved_step"] or not s["equal_losses"] for s in signals)
    lost = (unloadable + len(runs) - equal + sum(not run["hub_final_equal"] for run in runs) + len(restarted)
            + signal_lost)
    faults = Counter()
    for row in events["faults"]:
        faults[row["kind"]] += row["injected"]
    bad, scans = events["bad_input"], events["token_scan"]
    command = "python tests/reliability/report.py" + (" --slow" if slow else "")
    lines = [
        "# Reliability report",
        "",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Reproduce: `{command}` (runs `python -m pytest tests/reliability{' -m reliability' if slow else ''}`; "
        f"{'fast and slow' if slow else 'fast'} variants)",
        f"- Result: **{summary}** (exit code {exit_code}), {seconds:.0f} s wall",
        f"- Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}",
        "",
        f"## Data lost: {lost}",
        "",
        f"- Killed runs that completed with the uninterrupted run's final weights: {equal} of {len(runs)}",
        f"- Resumes that started at another step than their checkpoint's (restarted instead of resumed): "
        f"{len(restarted)} of {len(kills)}; each resume's first trained step is read from the run's own output",
        f"- Unloadable checkpoints seen after a kill: {unloadable} of {checked} checked "
        f"(every local `checkpoint-*`/`last`/`final` and every checkpoint folder on the Hub, after each kill)",
        "",
        f"## Kills survived: {sum(k['moment'] != '-' for k in kills)}",
        "",
        "| kind | kills |",
        "|---|---|",
        *(f"| {kind} | {count} |" for kind, count in sorted(Counter(k["kind"] for k in kills if k["moment"] != "-")
                                                              .items())),
        "",
        "| test | run | resumed from | trained from step | killed | then loaded (local / Hub folders) |",
        "|---|---|---|---|---|---|",
        *(f"| {k['test'].split('::')[-1]} | {k['round'] + 1} | {k['resumed_from']} (step {k['start_step']}) | "
          f"{k.get('started_at')} | {k['moment']} | {k['local_checked']} / {k['hub_checked']} |" for k in kills),
        "",
        "A save is killed mid-write (its folder written, not yet renamed into place; the last save is `final/`); "
        "an upload while the Hub receives its LFS files. After the kills each run resumes once more and completes.",
        "",
        f"## Signals survived: {len(signals)}",
        "",
        "Each run is held inside step 3 with its loader workers alive, signalled, then resumed with `--ckpt_path "
        "last` (the SLURM job restarted as SLURM does, without it); two DDP ranks: tests/test_ddp.py.",
        "",
        "| signal | sent to | exit code | saved step | resumed at | losses as uninterrupted |",
        "|---|---|---|---|---|---|",
        *(f"| {s['signal']} | {'the whole process group' if s['to'] == 'group' else 'the main process'} | "
          f"{s['exit_code']} | {s['saved_step']} | {s['resumed_at']} | {'yes' if s['equal_losses'] else 'NO'} |"
          for s in signals),
        "",
        f"## Signals at any moment: {len(offsets)} runs",
        "",
        "A run per offset, signalled at that offset (its whole process group): half the offsets spread evenly over "
        "the start-up (from 0.5 s: before it the interpreter itself starts), the rest from each run's own start of "
        "training, the last as it writes final/ (offsets on the uninterrupted run's clock); the exit code is 128 + "
        "the signal whenever the signal came while the run lived (\"-\": the run had ended before it was due; "
        "-signum: the default action in the interpreter's own exit, after the run's result was printed).",
        "",
        "| signal | offset (s) | run's life (s) | exit code | where it landed | saved step |",
        "|---|---|---|---|---|---|",
        *(f"| {o['signal']} | {o['offset']} | {o['life']} | {o['status'] if o['status'] is not None else '-'} | "
          f"{o['moment'] or '-'} | {o.get('saved_step') if o.get('saved_step') is not None else '-'} |"
          for o in offsets),
        "",
        *(f"- {landed}: {count} run(s)" for landed, count in sorted(Counter(o["moment"] or "-" for o in offsets)
                                                                   .items())),
        "",
        "## Disk full and SIGKILL",
        "",
        *(f"- Checkpoints on a {d['filesystem']} tmpfs: exit {d['exit_code']} at step {d['stopped_at']}, the failed "
          f"save named ({d['named']}), `last` at a complete {d['last']}" for d in events["disk_full"]),
        *(f"- `kill -9` of the trainer: {k['helpers']} helper processes (forkserver, resource tracker, loader "
          f"workers) before, {k['left']} left {k['after_s']} s after" for k in events["sigkill"]),
        "",
        f"## Hub faults injected: {sum(faults.values())}",
        "",
        "| fault | requests hit |",
        "|---|---|",
        *(f"| {kind} | {count} |" for kind, count in faults.items()),
        "",
        f"## Bad inputs tried: {len(bad)}",
        "",
        "Each case with its exit code, its wall time (two runs share the machine; most of it is importing torch "
        "and Lightning: bench/cli_startup.py has the figures) and the error it printed; no weight was read in any:",
        "",
        *(f"- **{b['case']}**, exit {b['exit_code']}, {b['seconds']} s: {b['error']}" for b in bad),
        "",
        "## Security",
        "",
        f"- Token scans: {len(scans)} runs (bad inputs, bad tokens by each route, a token revoked mid-run), "
        f"{sum(s['files'] for s in scans)} written files, {sum(s['hub_files'] for s in scans)} uploaded files and "
        f"their stdout/stderr: {sum(s['leaks'] for s in scans)} leaks",
        *(f"- A `training_state.pt` on the Hub whose unpickling runs code: refused: {'yes' if p['refused'] else 'NO'}"
          f", its code ran: {'YES' if p['code_ran'] else 'no'}" for p in events["unsafe_pickle"]),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", action="store_true", help="also run the slow variants (10 kills, a fault storm)")
    args = parser.parse_args()
    rows, summary, seconds, exit_code = run_suite(args.slow)
    (HERE / "REPORT.md").write_text(markdown(rows, summary, seconds, exit_code, args.slow))
    print(f"wrote {HERE / 'REPORT.md'}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
