"""theworld.stops without a run: its SLURM rule is Lightning's, and it is in place before torch is imported."""

import subprocess
import sys

import pytest
from lightning.fabric.plugins.environments.slurm import _is_srun_used

from theworld import stops


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


def test_a_stop_that_lands_in_a_finalizer_comes_again_just_after(monkeypatch):
    """A signal inside a ``__del__`` (a loader iterator shutting its workers down as it is collected): an exception
    raised there would be printed as "Exception ignored" and dropped. The stop comes a moment later instead."""
    import os
    import signal
    import sys
    import time

    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)
    monkeypatch.setattr(stops, "_raised", None)

    class ShuttingDown:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # a bytecode boundary inside the finalizer: the handler runs here

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stops.install()
        with pytest.raises(stops.RunStopped) as stopped:
            ShuttingDown()  # collected at once
            time.sleep(5)  # the stop comes again here
        assert stopped.value.code == 143 and dropped == []
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
