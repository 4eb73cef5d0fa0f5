"""Ctrl-C while the Hub is unreachable: the run saves its step and waits for that checkpoint's push; the wait line
says a second Ctrl-C stops waiting, a second Ctrl-C does (the run ends 130 without a traceback), and no line claims
a push that did not land."""

import os
import signal
import subprocess
import time

import pytest
from hub_server import HubServer
from support.accounts import TOKENS
from support.cli_runs import SHORT, fit
from support.hub_cli import SECRET, hub_env, lfs_uploads

pytestmark = pytest.mark.reliability


def wait_for(predicate, proc, log, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None and time.monotonic() < deadline, f"{what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def test_a_second_ctrl_c_ends_the_wait_for_an_unreachable_hub(demo_dir, tmp_path):
    marker, release, log = tmp_path / "in-step-3", tmp_path / "go-on", tmp_path / "run.log"
    with HubServer(TOKENS) as hub, lfs_uploads(), open(log, "w") as out:
        proc = fit(demo_dir, *SHORT, "--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir",
                   tmp_path, "--hub.push_to_hub", "true", "--hub.hub_model_id", "alice/unreachable",
                   "--trainer.callbacks+=kill_points.PauseInStep", "--trainer.callbacks.init_args.at_step", "2",
                   "--trainer.callbacks.init_args.marker", marker, "--trainer.callbacks.init_args.release", release,
                   env=hub_env(hub.url, tmp_path / "hf", HF_TOKEN=SECRET), stdout=out, stderr=subprocess.STDOUT,
                   start_new_session=True)
        wait_for(marker.exists, proc, log, "step 3")
        hub.stop()  # the Hub goes away after the preflight: step 3's push cannot land
        os.killpg(proc.pid, signal.SIGINT)
        release.touch()
        wait_for(lambda: "Ctrl-C again stops waiting" in log.read_text(), proc, log, "the wait line")
        os.killpg(proc.pid, signal.SIGINT)
        status = proc.wait(timeout=120)  # a bound for a busy machine
    text = log.read_text()
    assert status == 130, text[-3000:]
    assert "Stopped waiting (Ctrl-C): the push of step 3" in text, text[-3000:]
    assert "is on http" not in text  # no push landed
    assert "Traceback" not in text, text[-3000:]
    assert "theworld: stopped by SIGINT after step 3" in text
