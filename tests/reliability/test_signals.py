"""Signals as production sends them: Ctrl-C to the terminal's process group, SIGTERM to the main process
(``kill``, Kubernetes) or to the whole group (SLURM preemption, ``timeout``, systemd), and SLURM's requeue
signal before a time limit (``#SBATCH --signal=USR1@90``). Each run is held inside step 3 with its loader workers
alive; it must save step 3, stop with the shell's exit code and no traceback, leave no process behind, and resume
at step 3 with the uninterrupted run's losses and weights. The same with two DDP ranks: tests/test_ddp.py. Every
run here is a fresh interpreter, as a job starts it (not forked from a zygote: support/cli_runs.py)."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hub_server import Faults
from support.accounts import SECRET
from support.cli_runs import (
    SHORT,
    assert_ended,
    assert_resumed,
    assert_same_weights,
    fit,
    loader_workers,
    logged_losses,
    provenance,
)
from support.hub_cli import hub_env

pytestmark = pytest.mark.reliability


def resumed_like(run_dir: Path, straight_run: Path, from_step: int) -> bool:
    """Whether the resumed run trained from ``from_step`` on with the uninterrupted run's losses (for the report)."""
    try:
        assert_resumed(run_dir, straight_run, from_step=from_step)
    except AssertionError:
        return False
    return True


def held_in_step_3(demo_dir, tmp_path, out, *args, release=None, env=None):
    """Starts SHORT in ``tmp_path`` (output to ``out``, its own session) and returns its Popen once it is held inside
    step 3 with its loader workers alive; it goes on when ``release`` exists (never, without one)."""
    marker = tmp_path / "in-step-3"
    pause = ["--trainer.callbacks+=kill_points.PauseInStep", "--trainer.callbacks.init_args.at_step", "2",
             "--trainer.callbacks.init_args.marker", marker,
             *(["--trainer.callbacks.init_args.release", release] if release else [])]
    proc = fit(demo_dir, *SHORT, *run_dirs(tmp_path), *args, *pause, env=env, stdout=out, stderr=subprocess.STDOUT,
               start_new_session=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, Path(out.name).read_text()
        time.sleep(0.05)
    return proc


def signal_in_step_3(demo_dir, tmp_path, signum: int, target: str, *args, env=None) -> tuple[int, str]:
    """Runs SHORT in ``tmp_path``, holds it inside step 3 with its loader workers alive, sends ``signum`` to the
    main process or the whole process group, and lets it go on: (exit status, output). The workers end with it."""
    release, log = tmp_path / "go-on", tmp_path / "interrupted.log"
    with open(log, "w") as out:
        proc = held_in_step_3(demo_dir, tmp_path, out, *args, release=release, env=env)
        workers = loader_workers(proc.pid)
        assert workers, "the run has loader workers to signal"
        os.killpg(proc.pid, signum) if target == "group" else os.kill(proc.pid, signum)
        time.sleep(0.5)
        release.touch()
        status = proc.wait(timeout=300)
    assert_ended(workers)
    return status, log.read_text()


def slurm_batch_job(tmp_path: Path, job_id: str) -> tuple[dict, Path]:
    """The environment of a one-task SLURM batch job, with a stand-in ``scontrol`` on PATH that records its
    arguments in the returned file (one line per call)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = dict(SLURM_JOB_ID=job_id, SLURM_JOB_NAME="theworld", SLURM_NTASKS="1", SLURM_NNODES="1", SLURM_PROCID="0",
               SLURM_LOCALID="0", SLURM_NODEID="0", PATH=f"{bin_dir}:{os.environ['PATH']}")
    return env, calls


def run_dirs(path: Path) -> list:
    """A run's folders: its checkpoints and logs under ``path``."""
    return ["--trainer.default_root_dir", path, "--trainer.logger.init_args.save_dir", path]


# Ctrl-C in a terminal signals the foreground group; SIGTERM to the group (SLURM, `timeout`) is also
# tests/test_ddp.py's DDP case, and SIGTERM to the main PID the simplest: those two run with -m slow, to keep CI short.
@pytest.mark.parametrize("signum, target", [(signal.SIGINT, "group"),
                                            pytest.param(signal.SIGTERM, "main", marks=pytest.mark.slow),
                                            pytest.param(signal.SIGTERM, "group", marks=pytest.mark.slow)])
def test_ctrl_c_and_sigterm_save_the_step_and_resume_exactly(straight_run, demo_dir, tmp_path, signum, target,
                                                            figures):
    """Ctrl-C in a terminal, SLURM, ``timeout`` and most supervisors signal the whole process group (the loader
    workers too); ``kill`` and Kubernetes signal the main process. The run is held inside step 3 until the signal is
    in, so it stops after step 3: not on the save schedule."""
    status, text = signal_in_step_3(demo_dir, tmp_path, signum, target)
    assert status == 128 + signum, text[-3000:]
    assert f"theworld: stopped by {signal.Signals(signum).name} after step 3" in text and "--ckpt_path last" in text
    assert "Traceback" not in text, text[-3000:]
    assert (tmp_path / "checkpoints/last").resolve().name == "checkpoint-3"
    assert not (tmp_path / "checkpoints/final").exists()
    assert sorted(logged_losses(tmp_path)) == [0, 1, 2], "the stopped step keeps its row in metrics.csv"

    resumed = fit(demo_dir, *SHORT, *run_dirs(tmp_path), "--ckpt_path", "last", fresh_interpreter=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    figures.record("signal", signal=signal.Signals(signum).name, to=target, exit_code=status, saved_step=3,
                   resumed_at=min(logged_losses(tmp_path)), equal_losses=resumed_like(tmp_path, straight_run, 3))
    assert_resumed(tmp_path, straight_run, from_step=3)
    assert_same_weights(straight_run / "checkpoints/final", tmp_path / "checkpoints/final")
    assert provenance(tmp_path / "checkpoints/final") == provenance(straight_run / "checkpoints/final")


def test_a_second_ctrl_c_stops_at_once_and_says_what_is_not_saved(demo_dir, tmp_path):
    """Ctrl-C, then Ctrl-C again while the step still runs: the user wants out now. The run ends with 130 and one
    line saying that the step in progress is not saved and where the newest checkpoint is (none yet: SHORT saves
    every 4 steps); not Lightning's "Detected KeyboardInterrupt" and exit 1."""
    log = tmp_path / "interrupted.log"
    with open(log, "w") as out:
        proc = held_in_step_3(demo_dir, tmp_path, out)
        workers = loader_workers(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        status = proc.wait(timeout=300)
    assert_ended(workers)
    text = log.read_text()
    assert status == 130, text[-3000:]
    assert "theworld: stopped by SIGINT a second time, in step 3, which is not saved; no checkpoint was written " \
           "yet." in text and "--ckpt_path last" in text, text[-3000:]
    assert "Traceback" not in text and "Detected KeyboardInterrupt" not in text, text[-3000:]
    assert not list((tmp_path / "checkpoints").glob("checkpoint-*"))


def test_slurm_requeue_saves_the_step_requeues_and_the_restarted_job_resumes(straight_run, demo_dir, tmp_path,
                                                                            figures):
    """``#SBATCH --signal=USR1@90`` with Lightning's SLURM auto-requeue: before the time limit SLURM sends SIGUSR1 to
    every process of the job. The run saves step 3, asks ``scontrol requeue`` for its job and stops; SLURM then runs
    the same command again (SLURM_RESTART_COUNT=1), which resumes at step 3 without being told to."""
    slurm, calls = slurm_batch_job(tmp_path, job_id="777")
    run = tmp_path / "run"
    run.mkdir()
    status, text = signal_in_step_3(demo_dir, run, signal.SIGUSR1, "group", env=slurm)
    assert status == 128 + signal.SIGUSR1, text[-3000:]
    assert "theworld: stopped by SIGUSR1 after step 3" in text and "SLURM requeued job 777" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert calls.read_text() == "requeue 777\n"
    assert (run / "checkpoints/last").resolve().name == "checkpoint-3"

    restarted = fit(demo_dir, *SHORT, *run_dirs(run), env={**slurm, "SLURM_RESTART_COUNT": "1"},
                    fresh_interpreter=True)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    figures.record("signal", signal="SIGUSR1 (SLURM requeue)", to="group", exit_code=status, saved_step=3,
                   resumed_at=min(logged_losses(run)), equal_losses=resumed_like(run, straight_run, 3))
    assert_resumed(run, straight_run, from_step=3)
    assert_same_weights(straight_run / "checkpoints/final", run / "checkpoints/final")


def test_slurm_requeue_signal_during_start_up_requeues_the_job(demo_dir, tmp_path):
    """SLURM's requeue signal can come before the first step (a job requeued near its time limit restarts and is
    signalled again while loading): the job is requeued and ends with 138 and its line, as later in the run."""
    slurm, calls = slurm_batch_job(tmp_path, job_id="778")
    log = tmp_path / "requeued.log"
    with open(log, "w") as out:
        proc = fit(demo_dir, *SHORT, *run_dirs(tmp_path), env=slurm, stdout=out, stderr=subprocess.STDOUT,
                   start_new_session=True)
        time.sleep(2)  # imports: seconds before the first step on any machine
        os.killpg(proc.pid, signal.SIGUSR1)
        status = proc.wait(timeout=300)
    text = log.read_text()
    assert status == 128 + signal.SIGUSR1, text[-3000:]
    assert "theworld: stopped by SIGUSR1 before any step was trained" in text, text[-3000:]
    assert "SLURM requeued job 778" in text and "Traceback" not in text, text[-3000:]
    assert calls.read_text() == "requeue 778\n"


def test_sigterm_during_the_final_push_says_so_and_a_resume_pushes_final(demo_dir, hub, tmp_path):
    """Training finished, final/ written, and the final push is slow to land when SIGTERM comes: the run ends at
    once with 143 (not 0: it did not finish what it was asked), says training finished and the push may not have
    landed; ``--ckpt_path last`` then finds the run finished and pushes final/."""
    hub.faults = Faults(latency_s=60, paths=r"/commit/")
    hub_args = ["--hub.push_to_hub", "true", "--hub.hub_model_id", "alice/stopped", "--hub.hub_strategy", "end",
                "--hf_token", SECRET]
    env = hub_env(hub.url, tmp_path / "hf_home")
    log = tmp_path / "stopped.log"
    with open(log, "w") as out:
        proc = fit(demo_dir, *SHORT, *run_dirs(tmp_path), *hub_args, env=env, stdout=out, stderr=subprocess.STDOUT,
                   start_new_session=True)
        deadline = time.monotonic() + 300
        while "Waiting for the final push" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        status = proc.wait(timeout=60)
    text = log.read_text()
    assert status == 128 + signal.SIGTERM, text[-3000:]
    assert "theworld: stopped by SIGTERM after training finished at step 8, while finishing" in text, text[-3000:]
    assert "Traceback" not in text and "pushed" not in text.split("stopped by")[-1], text[-3000:]
    assert (tmp_path / "checkpoints/last").resolve().name == "checkpoint-8"
    assert "final/model.safetensors" not in hub.files("alice/stopped")

    hub.faults = Faults()
    resumed = fit(demo_dir, *SHORT, *run_dirs(tmp_path), *hub_args, "--ckpt_path", "last", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert hub.files("alice/stopped")["final/model.safetensors"] == \
        (tmp_path / "checkpoints/final/model.safetensors").read_bytes()


def test_sigkill_of_the_trainer_leaves_no_process_behind(demo_dir, tmp_path, figures):
    """An OOM kill or ``kill -9`` ends the trainer without a word: its forkserver, resource tracker and loader
    workers must end with it (within seconds), not live on under PID 1 holding memory and the job's output pipe."""
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        proc = held_in_step_3(demo_dir, tmp_path, out)
        helpers = loader_workers(proc.pid)
        assert len(helpers) >= 3, "a forkserver, a resource tracker and loader workers to outlive the trainer"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    assert_ended(helpers, wait_s=10)
    figures.record("sigkill", helpers=len(helpers), left=0, after_s=10)
