"""Tokens and pickles: a token revoked mid-run fails the final push clearly without leaking the token, and a
training state from the Hub that would run code when unpickled is refused before it runs."""

import shutil
import subprocess
import time
from fractions import Fraction

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi
from support.cli_runs import SHORT, fit
from support.hub_cli import SECRET, hub_env, run, token_leaks, workdir

from theworld import TheWorld
from theworld.callbacks.checkpoint import TrainableCheckpointIO
from theworld.checkpoint import UnsafeCheckpointError
from theworld.layout import TRAINING_STATE_NAME

pytestmark = pytest.mark.reliability


def wait_for(condition, what: str, proc, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended while waiting for {what}: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def test_a_token_revoked_mid_run_fails_only_the_pushes_and_never_shows(demo_dir, hub, tmp_path, monkeypatch,
                                                                       figures):
    """The run pauses in step 4 once step 2 is on the Hub; the token is revoked; the run goes on.

    Decided: training finishes and keeps every local checkpoint and final/, each later push fails with a
    warning naming the token problem, and `theworld fit` exits 1 because the final push failed."""
    root, marker, release = tmp_path / "run", tmp_path / "paused", tmp_path / "go"
    args = ["--trainer.max_steps", 6, "--checkpoint.every_n_train_steps", 2, "--checkpoint.save_top_k", -1,
            "--trainer.val_check_interval", 100,
            "--trainer.default_root_dir", root, "--trainer.logger.init_args.save_dir", root,
            "--hub.push_to_hub", "true", "--hub.hub_model_id", "alice/revoked", "--hub.hub_private_repo", "true",
            "--hub.hub_strategy", "checkpoint", "--trainer.callbacks+=kill_points.PauseInStep",
            "--trainer.callbacks.init_args.at_step", 3, "--trainer.callbacks.init_args.marker", marker,
            "--trainer.callbacks.init_args.release", release]
    proc = fit(demo_dir, *args, env=hub_env(hub.url, tmp_path / "hf_home", HF_TOKEN=SECRET),
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(marker.exists, "pause in step 4", proc)

    def step_2_pushed():
        return "Training in progress, step 2" in [c["message"] for c in hub.commits("alice/revoked")]

    wait_for(step_2_pushed, "push of step 2", proc)
    hub.revoke(SECRET)
    release.touch()
    stdout, stderr = proc.communicate(timeout=300)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    rejected = sum(status == 401 for _, _, status in hub.request_log)
    figures.record("faults", kind="token revoked mid-run (401)", injected=rejected)

    assert result.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("theworld: error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert "The final push to the Hub" in errors[0] and "final weights are intact" in errors[0]
    assert "the Hugging Face token from the HF_TOKEN environment variable is invalid or expired" in errors[0]
    assert "Hub push 'Training in progress, step 4' failed: HubError: Authentication failed" in stderr
    local = root / "checkpoints"
    assert {"checkpoint-4", "checkpoint-6", "final"} <= {p.name for p in local.iterdir()}, "training went on"
    monkeypatch.chdir(demo_dir)  # config.json names the base models by demo_assets/... paths
    TheWorld.from_pretrained(str(local / "final"))
    assert hub.is_private("alice/revoked")
    assert [c["message"] for c in hub.commits("alice/revoked")][1:] == ["Training in progress, step 2"]
    assert hub.files("alice/revoked")["model.safetensors"] == (local / "checkpoint-2/model.safetensors").read_bytes()
    uploaded = hub.files("alice/revoked")
    leaks = token_leaks(SECRET, result, root, tmp_path / "hf_home")
    leaks += [f"hub {path}" for path, data in uploaded.items() if SECRET.encode() in data]
    figures.record("token_scan", case="token revoked mid-run", files=sum(p.is_file() for p in root.rglob("*")),
                   hub_files=len(uploaded), leaks=len(leaks))
    assert list(root.rglob("config.yaml")), "the saved config is among the scanned files"
    assert leaks == []


class CodeOnUnpickle:
    """What a malicious training_state.pt holds: unpickling it calls exec, which here writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def test_a_training_state_that_would_run_code_is_refused(demo_dir, straight_run, hub, tmp_path, figures):
    marker, state = tmp_path / "pwned", tmp_path / TRAINING_STATE_NAME
    torch.save({"global_step": 4, "epoch": 0, "payload": CodeOnUnpickle(marker)}, state)
    good = straight_run / "checkpoints/checkpoint-4"
    hub.create_repo("alice/evil")
    HfApi(endpoint=hub.url, token=SECRET).create_commit("alice/evil", [
        CommitOperationAdd("last-checkpoint/model.safetensors", str(good / "model.safetensors")),
        CommitOperationAdd("last-checkpoint/config.json", str(good / "config.json")),
        CommitOperationAdd(f"last-checkpoint/{TRAINING_STATE_NAME}", str(state)),
    ], commit_message="a checkpoint with a payload")
    cwd = workdir(demo_dir, tmp_path / "run")
    result = run(cwd, hub.url, tmp_path / "hf_home", *SHORT, "--ckpt_path", "hf://alice/evil",
                 env={"HF_TOKEN": SECRET})
    figures.record("unsafe_pickle", refused=result.returncode != 0, code_ran=marker.exists())
    assert not marker.exists(), "the pickle's code ran"
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("theworld: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Refused to load" in errors[0] and TRAINING_STATE_NAME in errors[0] and "(exec)" in errors[0]
    assert SECRET not in result.stdout + result.stderr


def test_other_pickled_objects_load_only_when_the_user_opts_in(straight_run, tmp_path):
    folder = shutil.copytree(straight_run / "checkpoints/checkpoint-4", tmp_path / "checkpoint-4")
    state = torch.load(folder / TRAINING_STATE_NAME, weights_only=True)
    torch.save({**state, "note": Fraction(1, 3)}, folder / TRAINING_STATE_NAME)
    checkpoint_io = TrainableCheckpointIO(async_save=False)
    with pytest.raises(UnsafeCheckpointError, match=r"\(fractions.Fraction\).*--weights_only false"):
        checkpoint_io.load_checkpoint(folder)
    assert checkpoint_io.load_checkpoint(folder, weights_only=False)["note"] == Fraction(1, 3)  # --weights_only false
