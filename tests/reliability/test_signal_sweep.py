"""SIGTERM and SIGINT at any moment of a run's life, as SLURM, ``timeout``, Kubernetes and a terminal send them.

One uninterrupted run measures the life of a short run (start-up, loader start, four steps with two validations and
two scheduled saves, final/, exit); then a run per offset, half spread evenly over its start-up and half over the
rest of its life to its exit, gets the signal at that offset (the first at FIRST_OFFSET_S: before it the interpreter itself is starting, and no code of ours has
run: a SIGTERM there is the default action, which a shell reports as 143, a SIGINT Python's KeyboardInterrupt), to its whole process group (as ``timeout``, SLURM and Ctrl-C in a terminal send it). Each must exit
with the shell's status for the signal (143, 130), never 0 unless it had ended before the signal was due, never with
a traceback; its stop line says what was saved and how to resume; a step trained since the last checkpoint is
saved, ``last`` points at it, and a resume from there starts at that step with the uninterrupted run's loss.
"""

import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from support.cli_runs import assert_ended, fit, loader_workers, logged_losses, theworld
from test_ddp import DDP, clean_env, losses, run_args, shard, two_ranks  # noqa: F401 (fixtures)

from theworld.callbacks.checkpoint import check_intact

pytestmark = pytest.mark.reliability

FIRST_OFFSET_S = 0.5
# CI sends each signal at 10 moments, 20 in all (each run costs up to a whole run's life); `-m slow` and
# `python tests/reliability/report.py --slow` at 24 each.
SWEEPS = [pytest.param(10, marks=pytest.mark.timeout(3600)),
          pytest.param(24, marks=[pytest.mark.slow, pytest.mark.timeout(7200)])]
MAX_STEPS = 4
SWEEP = ["--trainer.max_steps", MAX_STEPS, "--checkpoint.every_n_train_steps", "2", "--trainer.val_check_interval",
         "2", "--trainer.limit_val_batches", "1", "--checkpoint.save_top_k", "-1", "--data.batch_size", "4"]
STOPPED = re.compile(r"theworld: stopped by (SIG\w+) (.*)")


def run_dirs(path: Path) -> list:
    return ["--trainer.default_root_dir", path, "--trainer.logger.init_args.save_dir", path]


@pytest.fixture(scope="module")
def reference(demo_dir, tmp_path_factory) -> tuple[Path, float, float]:
    """The uninterrupted run: its folder (losses, checkpoints), the second its training started (its "training
    steps" line) and its life in seconds, process start to exit."""
    root = tmp_path_factory.mktemp("reference")
    start = time.monotonic()
    proc = fit(demo_dir, *SWEEP, *run_dirs(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    training, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if training is None and line.startswith(TRAINING_LINE):
            training = time.monotonic() - start
    assert proc.wait() == 0 and training is not None, "".join(lines)[-3000:]
    return root, training, time.monotonic() - start


TRAINING_LINE = "theworld: training steps"  # what a run prints as its first step starts
FINAL_LINE = "theworld: final weights in"  # and once final/ is written


def moments(count: int, training: float, life: float) -> list[tuple[str, float]]:
    """``count`` moments (what they count from, seconds): half spread evenly over the start-up (from the process's
    start, FIRST_OFFSET_S to the reference's start of training), half over the rest (from the run's own start of
    training: the steps, validations and saves), the last as the run writes final/ (the end and the exit). Counting
    from each run's own lines keeps the moments there however long its start-up or its steps took."""
    early = count // 2
    late = count - early - 1
    return ([("start", FIRST_OFFSET_S + (training - FIRST_OFFSET_S) * i / early) for i in range(early)]
            + [("training", (life - training) * i / late) for i in range(late)]
            + [("final", 0.0)])  # the last at the run's own end of training, however slow its steps were


def signalled_run(demo_dir, run: Path, signum: int, moment: tuple[str, float]) -> tuple[int | None, str]:
    """A run in ``run`` whose process group gets ``signum`` at ``moment``: (exit status, output). The status is
    None when the run had ended before the signal was due (it was not sent)."""
    anchor, seconds = moment
    run.mkdir()
    log = run / "output.log"
    with open(log, "w") as out:
        proc = fit(demo_dir, *SWEEP, *run_dirs(run), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if anchor != "start":
            line = TRAINING_LINE if anchor == "training" else FINAL_LINE
            while line not in log.read_text() and proc.poll() is None:
                time.sleep(0.02)
        time.sleep(seconds)
        ended_before = proc.poll() is not None
        if not ended_before:
            os.killpg(proc.pid, signum)
        status = proc.wait(timeout=600)
    # Its helpers end with it (a worker still starting printed a traceback after the trainer's exit).
    assert_ended(loader_workers(proc.pid))
    return (None if ended_before else status), log.read_text()


def check_stop(run: Path, signum: int, status: int | None, text: str) -> tuple[str, int | None]:
    """Asserts what a stop must leave; returns (the moment it hit, the step a resume must start at, or None)."""
    checkpoints = run / "checkpoints"
    assert "Traceback" not in text, text[-3000:]
    if status is None:
        assert "theworld: final weights in" in text, text[-3000:]
        return "ended before the signal", None
    if status == -signum:
        # Killed by the default action: only in the interpreter's own exit, after its finalization has given the
        # signals back to the system (what a shell reports as 128 + signum too); the run had finished.
        assert "theworld: trained" in text and (checkpoints / "final").is_dir(), text[-3000:]
        return "the interpreter's exit", None
    assert status == 128 + signum, f"exit {status} for {signal.Signals(signum).name}:\n{text[-3000:]}"
    stop = STOPPED.search(text)
    if stop is None:
        # After the run's result was printed: the exit itself.
        assert f"theworld: {signal.Signals(signum).name} while exiting: exiting at once" in text, text[-3000:]
        assert (checkpoints / "final").is_dir()
        return "the exit", None
    assert stop[1] == signal.Signals(signum).name and "--ckpt_path last" in text, text[-3000:]
    what = stop[2]
    if what.startswith("before any step was trained"):
        assert not list(checkpoints.glob("checkpoint-*")), "no step trained, so no checkpoint"
        return "start-up", None
    step = int(re.search(r"(?:after|at|past) step (\d+)", what)[1])
    last = (checkpoints / "last").resolve()
    assert last.name == f"checkpoint-{step}", (what, last)
    check_intact(last, "--ckpt_path")
    if what.startswith(("after training finished", "before this run trained a step past")):
        assert step == MAX_STEPS and (checkpoints / "final").is_dir()
        return "finishing (final/ written)", None
    assert what.startswith(f"after step {step};"), what
    return f"step {step}", step if step < MAX_STEPS else None


def sweep(signum: int, offsets: int, demo_dir: Path, tmp_path: Path, reference: tuple[Path, float, float],
          figures) -> None:
    straight, training, life = reference
    landed: Counter = Counter()
    resume_at: dict[int, Path] = {}
    for anchor, seconds in moments(offsets, training, life):
        # As on the reference run's clock (its exit, for the moment at the run's own end of training).
        offset = {"start": seconds, "training": training + seconds, "final": life}[anchor]
        run = tmp_path / f"at-{offset:05.1f}s"
        status, text = signalled_run(demo_dir, run, signum, (anchor, seconds))
        moment, step = check_stop(run, signum, status, text)
        landed[moment] += 1
        figures.record("signal_offset", signal=signal.Signals(signum).name, offset=round(offset, 1),
                       life=round(life, 1), status=status, moment=moment, saved_step=step)
        if step is not None:
            resume_at.setdefault(step, run)
    # Spread over the life: start-up, the steps and the end were each hit.
    assert landed["start-up"] and len(resume_at) >= 1, landed
    assert any(m in landed for m in ("finishing (final/ written)", "the exit", "the interpreter's exit",
                                     "ended before the signal")), landed
    straight_losses = logged_losses(straight)
    for step, run in resume_at.items():  # one resume per saved step: the same step saves the same state
        result = fit(demo_dir, *SWEEP, *run_dirs(run), "--ckpt_path", "last", "--trainer.max_steps", step + 1)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"training steps {step} -> {step + 1}" in result.stderr + result.stdout
        resumed = logged_losses(run)
        assert sorted(resumed) == [step], resumed
        assert abs(resumed[step] - straight_losses[step]) <= 1e-5, (resumed, straight_losses[step])
        figures.record("signal", signal=f"{signal.Signals(signum).name} (sweep)", to="group", exit_code=128 + signum,
                       saved_step=step, resumed_at=min(resumed), equal_losses=True)


@pytest.mark.parametrize("offsets", SWEEPS)
def test_sigterm_at_any_moment_of_a_run(demo_dir, tmp_path, reference, figures, offsets):
    sweep(signal.SIGTERM, offsets, demo_dir, tmp_path, reference, figures)


@pytest.mark.parametrize("offsets", SWEEPS)
def test_sigint_at_any_moment_of_a_run(demo_dir, tmp_path, reference, figures, offsets):
    sweep(signal.SIGINT, offsets, demo_dir, tmp_path, reference, figures)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("fraction", [0.1, 0.35, 0.6, 0.85])
def test_sigterm_to_a_ddp_job_at_any_moment(two_ranks, demo_dir, shard, tmp_path, figures, fraction):
    """The whole-job SIGTERM of SLURM and ``timeout`` at moments spread over a 2-rank run's life (start-up and
    rendezvous, loader start, the steps): each ends with 143, no traceback and one stop line, saves the step in
    progress, and a resume starts at that step with the uninterrupted run's loss."""
    life = float((two_ranks / "life-seconds").read_text())
    run = tmp_path / f"at-{fraction}"
    run.mkdir()
    args = run_args(run, shard, *DDP, "--data.batch_size", "4", "--data.num_workers", "1")
    log = run / "output.log"
    with open(log, "w") as out:
        proc = theworld("fit", *args, cwd=demo_dir, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                        start_new_session=True)
        time.sleep(life * fraction)
        ended_before = proc.poll() is not None
        if not ended_before:
            os.killpg(proc.pid, signal.SIGTERM)
        status = proc.wait(timeout=300)
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    figures.record("signal_offset", signal="SIGTERM (2 DDP ranks)", offset=round(life * fraction, 1),
                   life=round(life, 1), status=None if ended_before else status, moment=None)
    if ended_before:
        assert "theworld: final weights in" in text
        return
    assert status == 128 + signal.SIGTERM, text[-4000:]
    stop = re.search(r"theworld: stopped by SIGTERM (after step (\d+)|before any step was trained)", text)
    assert stop and "--ckpt_path last" in text, text[-4000:]
    assert text.count("theworld: stopped by") == 1, "one line for the job, not one per rank"
    if stop[2] is None:
        assert not list((run / "checkpoints").glob("checkpoint-*"))
        return
    step = int(stop[2])
    assert (run / "checkpoints/last").resolve().name == f"checkpoint-{step}"
    if step < 8:
        theworld("fit", *args, "--ckpt_path", "last", "--trainer.max_steps", step + 1, cwd=demo_dir,
                 env=clean_env(), timeout=300)
        assert sorted(losses(run)) == [step], "the resume starts at the checkpoint's step"
        assert losses(run)[step] == pytest.approx(losses(two_ranks)[step], abs=1e-6)
