"""theworld.stops without a run: its SLURM rule is Lightning's, and it is in place before torch is imported."""

import multiprocessing.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightning.fabric.plugins.environments.slurm import _is_srun_used
from lightning.fabric.utilities.rank_zero import _get_rank

from theworld import stops

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env", [
    {},
    {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train"},
    {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "bash"},
    {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "interactive"},
    {"SLURM_NTASKS": "1"},
    {"SLURM_JOB_NAME": "train"},
])
def test_a_slurm_batch_job_is_what_lightning_calls_one(monkeypatch, env):
    """The rule is restated (it runs before Lightning is imported); it must stay Lightning's own."""
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert stops.slurm_batch_job() == _is_srun_used()


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


@pytest.mark.parametrize("env", [
    {},
    {"LOCAL_RANK": "1"},  # a child rank of Lightning's launcher
    {"RANK": "3", "LOCAL_RANK": "1"},  # torchrun, second node
    {"SLURM_PROCID": "2"},
    {"RANK": "0", "SLURM_PROCID": "5"},
    {"JSM_NAMESPACE_RANK": "1"},
])
def test_the_rank_before_lightning_is_imported_is_the_one_lightning_reads(monkeypatch, env):
    """A rank stopped while it imports prints no stop line unless it is rank 0, by Lightning's own rule."""
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert stops.environment_rank() == (_get_rank() or 0)


def test_the_console_script_reaches_its_handlers_before_torch_is_imported():
    """``theworld`` imports theworld.__main__, whose main() installs the handlers first: nothing heavy may come
    before (a signal in torch's or Lightning's import would meet the default action, or Lightning's handler)."""
    code = "import sys\nimport theworld.__main__\nprint(sorted({'torch', 'lightning', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("argv, expected", [
    (["fit", "--config", "c.yaml", "--hf_token", "hf_secret", "--ckpt_path", "hf://a/b"],
     "Resume with:\n  theworld fit --config c.yaml --ckpt_path last"),
    (["fit", "--hub.hf_token=hf_secret", "--resume_from=x"], "Resume with:\n  theworld fit --ckpt_path last"),
    (["validate", "--config", "c.yaml", "--hf_token", "hf_secret"], "Run it again with:\n  theworld validate --config c.yaml"),
])
def test_the_stop_line_gives_the_command_to_go_on_and_never_the_token(argv, expected):
    line = stops.RunStopped(15).describe(stops.resume_command(argv))
    assert line.endswith(expected + "\n") and "hf_secret" not in line


def test_a_stop_that_a_library_wraps_or_swallows_still_ends_the_run_as_that_stop(monkeypatch, capsys):
    """A SIGTERM lands inside a library that catches the stop and raises its own error (diffusers' lazy import
    wraps it in a RuntimeError), or drops it: the run still ends with 143 and its stop line, not a traceback."""
    import os
    import signal

    from theworld.lit import cli

    def wrapping(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # a bytecode boundary: the handler runs here
        except BaseException as err:
            raise RuntimeError("Failed to import diffusers.models...: maximum recursion depth exceeded") from err

    def swallowing(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)
        except BaseException:
            pass

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for library in (wrapping, swallowing):
            for signum, handler in previous.items():  # as a new process has them (a stop ignores its repeats)
                signal.signal(signum, handler)
            monkeypatch.setattr(stops, "_raised", None)
            monkeypatch.setattr(stops, "_progress", stops.RunProgress())  # no checkpoint from an earlier test
            monkeypatch.setattr(cli, "TheWorldCLI", library)
            with pytest.raises(SystemExit) as ended:
                cli.main(["fit", "--trainer.max_steps", "1"])
            assert ended.value.code == 143, library.__name__
            assert "theworld: stopped by SIGTERM before any step was trained" in capsys.readouterr().err
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _signal_in_a_del():
    class ShuttingDown:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # a bytecode boundary inside the finalizer: the handler runs here

    ShuttingDown()  # collected at once


def _signal_in_a_multiprocessing_finalizer():
    class Semaphore:  # multiprocessing's own objects unregister from the resource tracker in such a callback
        pass

    def unregister():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)

    semaphore = Semaphore()
    multiprocessing.util.Finalize(semaphore, unregister)
    del semaphore  # the weakref callback runs the finalizer now


@pytest.mark.parametrize("finalizer", [_signal_in_a_del, _signal_in_a_multiprocessing_finalizer],
                         ids=["__del__", "multiprocessing Finalize"])
def test_a_stop_that_lands_in_a_finalizer_comes_again_just_after(monkeypatch, finalizer):
    """A signal inside a finalizer (a loader iterator shutting its workers down as it is collected, a semaphore
    unregistering from the resource tracker at the end of training): an exception raised there would be printed as
    "Exception ignored" with a traceback, and dropped. The stop comes a moment later instead."""
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)
    monkeypatch.setattr(stops, "_raised", None)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stops.install()
        with pytest.raises(stops.RunStopped) as stopped:
            finalizer()
            time.sleep(5)  # the stop comes again here
        assert stopped.value.code == 143 and dropped == []
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


RENDEZVOUS = """
import socket, sys
from datetime import timedelta
from theworld import stops
stops.install()
import torch.distributed as dist
with socket.socket() as free:
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
print("waiting for rank 1", flush=True)
dist.TCPStore("127.0.0.1", port, world_size=2, is_master=True, wait_for_workers=True, timeout=timedelta(seconds=90))
print("rank 1 came", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_ends_a_main_thread_blocked_in_a_rendezvous(signum):
    """Rank 0 waits in torch.distributed's rendezvous (C++, no Python handler runs) for a rank that the same signal
    ended: the run still stops within seconds with the signal's status and its line, not when the rendezvous times
    out (90 s here; 30 min by default) nor by Lightning's launcher watch's SIGKILL."""
    rank0 = subprocess.Popen([sys.executable, "-c", RENDEZVOUS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert rank0.stdout.readline() == "waiting for rank 1\n"
    time.sleep(0.5)  # inside the C++ wait
    rank0.send_signal(signum)
    try:
        stderr = rank0.communicate(timeout=30)[1]
    finally:
        rank0.kill()
    assert rank0.returncode == 128 + signum, stderr
    assert f"theworld: stopped by {signal.Signals(signum).name} before any step was trained" in stderr, stderr
    assert "Traceback" not in stderr, stderr


FORKED_CHILD_STOPPED = """
import os, signal, time
from theworld import stops
stops.install()
child = os.fork()
if child == 0:
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)  # the child's own stop
    time.sleep(60)
    os._exit(0)
time.sleep(stops.BLOCKED_GRACE_S + 2)  # one C call meanwhile: the main thread does not move
os.waitpid(child, 0)
print("the trainer went on", flush=True)
"""


def test_a_forked_childs_signal_does_not_stop_its_parent():
    """A forked process (a fork-started loader worker) gets a stop signal that its trainer does not: the signal does
    not reach the trainer's watch of stop signals, which would end a trainer sitting in one C call."""
    run = subprocess.run([sys.executable, "-c", FORKED_CHILD_STOPPED], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "the trainer went on\n", run.stderr


@pytest.mark.parametrize("rank", [None, "1"], ids=["rank 0", "child rank"])
def test_only_rank_0_says_it_stopped_while_importing(tmp_path, rank):
    """A whole-job SIGTERM while the ranks import: each exits 143, and the job's stop line comes once (rank 0's);
    a child rank of Lightning's launcher knows its rank from LOCAL_RANK only."""
    env = {name: value for name, value in os.environ.items() if name not in RANK_VARIABLES}
    if rank is not None:
        env["LOCAL_RANK"] = rank
    run = subprocess.Popen([sys.executable, "-m", "theworld", "fit", "--config", "configs/demo.yaml"], cwd=REPO,
                           env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # past the handlers' installation, inside the imports (several seconds)
    run.send_signal(signal.SIGTERM)
    stderr = run.communicate(timeout=60)[1]
    assert run.returncode == 143, stderr
    assert ("theworld: stopped by SIGTERM" in stderr) == (rank is None), stderr


REPEATED_WHILE_EXITING = """
import os, signal, sys, time
from theworld import stops
stops.install()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
except stops.RunStopped as stop:
    stops.exiting(stop)
    os.kill(os.getpid(), signal.SIGTERM)  # the same stop again: rank 0's forward, SLURM's second signal
    time.sleep(0.2)
    print("exited with the stop's own line", flush=True)
    os.kill(os.getpid(), signal.SIGINT)  # another signal: out at once
    time.sleep(5)
"""


def test_a_stops_own_signal_again_while_exiting_is_a_repeat():
    run = subprocess.run([sys.executable, "-c", REPEATED_WHILE_EXITING], capture_output=True, text=True, timeout=60)
    assert run.stdout == "exited with the stop's own line\n", run.stderr
    assert "SIGTERM while exiting" not in run.stderr
    assert run.returncode == 130 and "theworld: SIGINT while exiting: exiting at once." in run.stderr, run.stderr
