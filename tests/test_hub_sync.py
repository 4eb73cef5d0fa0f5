"""HubSyncCallback in a real Lightning run (a tiny stand-in module) against the local Hub, in-process."""

import csv
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
import pytest
from hub_server import Faults
from huggingface_hub import HfApi
from lightning.pytorch.loggers import CSVLogger
from support.hub_standin import (
    ALICE,
    FINAL,
    REPO,
    ROOT,
    StandIn,
    assert_every_commit_consistent,
    fit,
    messages,
    resumable,
)

from theworld.callbacks import HubSyncCallback, TrainableCheckpoint
from theworld.hub import HubError, HubToken, download_resume_checkpoint


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("every_save", ROOT | FINAL),
        ("checkpoint", ROOT | FINAL | resumable("last-checkpoint")),
        ("all_checkpoints", ROOT | FINAL | resumable("last-checkpoint") | resumable("checkpoint-4")
         | resumable("checkpoint-6")),
        ("end", ROOT | FINAL),
    ],
)
def test_each_strategy_leaves_its_repo_layout(hub, tmp_path, strategy, expected):
    run_config = {"hf_token": ALICE, "hub": {"hf_token": ALICE, "hub_model_id": REPO}, "model": {"learning_rate": 0.05}}
    trainer, sync = fit(tmp_path, hub, hub_strategy=strategy, hub_tag="v1.0-final", run_config=run_config,
                        logger=CSVLogger(tmp_path, name="logs"))
    files = hub.files(REPO)
    assert set(files) == expected
    local = tmp_path / "checkpoints"
    assert files["final/model.safetensors"] == (local / "final/model.safetensors").read_bytes()
    assert files["model.safetensors"] == files["final/model.safetensors"]
    if "last-checkpoint/training_state.pt" in files:  # the newest local resumable folder
        assert files["last-checkpoint/training_state.pt"] == (local / "checkpoint-6/training_state.pt").read_bytes()
    for name in (n for n in files if n.startswith("checkpoint-")):
        assert files[name] == (local / name).read_bytes()

    history = messages(hub)
    assert history[-1] == "End of training"
    assert all(m.startswith("Training in progress, step ") for m in history[:-1])
    assert history == ["End of training"] if strategy == "end" else len(history) >= 1
    tags = HfApi(endpoint=hub.url, token=ALICE).list_repo_refs(REPO).tags
    assert [(t.name, t.target_commit) for t in tags] == [("v1.0-final", hub.commits(REPO)[-1]["oid"])]

    assert json.loads(files["training_args.json"]) == {"hf_token": None, "hub": {"hf_token": None, "hub_model_id": REPO},
                                                       "model": {"learning_rate": 0.05}}
    assert ALICE.encode() not in b"".join(files.values())
    card = files["README.md"].decode()
    assert "| optimizer steps | 6 of 6 |" in card and "| learning rate | 0.05 |" in card
    assert "| effective batch size | 4 |" in card and "| samples seen | 24 |" in card
    assert f'TheWorld.from_pretrained("{REPO}")' in card
    # How to go on training from this repo, as far as what it holds allows.
    exact = "last-checkpoint/training_state.pt" in files
    assert (f"--ckpt_path hf://{REPO}`" in card) == exact, "an exact resume is offered only with a training state"
    assert (f"--ckpt_path hf://{REPO}/checkpoint-" in card) == (strategy == "all_checkpoints")
    assert exact or f"--model.init_from hf://{REPO}" in card

    with open(next((tmp_path / "logs").glob("version_*/metrics.csv"))) as fh:
        rows = list(csv.DictReader(fh))
    assert {"hub/pushes_done", "hub/pushes_failed", "hub/pushes_pending"} <= rows[0].keys()
    assert float(rows[-1]["hub/pushes_done"]) == len(history) and float(rows[-1]["hub/pushes_failed"]) == 0
    assert not list(local.glob(".hub-staging*")), "staging is cleaned up"


def test_all_checkpoints_prunes_the_hub_in_the_same_push_as_the_local_folder(hub, tmp_path):
    """save_top_k=2, a save every step: the push of step N holds checkpoint-(N-1)/ and checkpoint-N/ and no older
    folder (Lightning deletes the rotated-away folder right after the save of step N)."""
    fit(tmp_path, hub, hub_strategy="all_checkpoints", every=1, top_k=2, max_steps=5, callbacks=[SlowSteps()])
    pushed = {}
    for commit in hub.commits(REPO):
        if commit["message"].startswith("Training in progress, step "):
            step = int(commit["message"].rsplit(" ", 1)[1])
            tree = hub.files(REPO, revision=commit["oid"])
            pushed[step] = sorted({path.split("/")[0] for path in tree if path.startswith("checkpoint-")})
    assert pushed, "intermediate pushes landed"
    assert pushed == {step: [f"checkpoint-{n}" for n in (step - 1, step) if n > 0] for step in pushed}


class SlowSteps(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(0.1)  # leaves the uploader time to land intermediate pushes


def test_flaky_hub_30_percent_of_requests_fail_and_the_final_push_lands(hub, tmp_path, fast_client_backoff):
    hub.faults = Faults(error_rate=0.2, drop_rate=0.1, seed=7)
    fit(tmp_path, hub, hub_strategy="checkpoint", every=1, top_k=-1, max_steps=12, max_retries=30,
        callbacks=[SlowSteps()])
    hub.faults = Faults()
    assert set(hub.files(REPO)) == ROOT | FINAL | resumable("last-checkpoint")
    assert sum(status in (0, 503) for _, _, status in hub.request_log) >= 5, "faults were injected"
    assert_every_commit_consistent(hub, tmp_path)
    assert messages(hub)[-1] == "End of training"


def test_a_commit_applied_but_answered_500_is_not_duplicated(hub, tmp_path):
    hub.faults = Faults(commit_500_after_apply=3)
    _, sync = fit(tmp_path, hub, hub_strategy="checkpoint", every=1, top_k=-1, max_steps=4)
    history = messages(hub)
    assert history[-1] == "End of training"
    assert len(history) == len(set(history)), history
    assert sync.metrics["hub/pushes_failed"] == 0
    assert_every_commit_consistent(hub, tmp_path)


class CommitsHeldUntilTrainingEnds(L.Callback):
    """Holds the first Hub commit until the training loop has ended, and notes which had landed by then: a loop that
    waited for a push would stall on the held commit until ``HOLD_S`` ran out, and the commit would land first.

    The held commit is let go once the newest intermediate save (step ``newest``) is queued too, and the final save
    is announced only once the next commit has started: that commit shows which of the saves queued behind the held
    one the uploader took."""

    HOLD_S = 20.0

    def __init__(self, hub, monkeypatch, newest):
        self.hub, self.newest, self.landed_during_training = hub, newest, None
        self.ended, self.newest_queued, self.next_started = threading.Event(), threading.Event(), threading.Event()
        self.commits, self.timed_out = 0, []
        create_commit = HfApi.create_commit

        def held(*args, **kwargs):
            self.commits += 1  # the uploader's one thread
            if self.commits == 1:
                self.wait(self.ended, "the end of training")
                self.wait(self.newest_queued, f"the save of step {newest} queued")
            else:
                self.next_started.set()
            return create_commit(*args, **kwargs)

        monkeypatch.setattr(HfApi, "create_commit", held)

    def wait(self, event, what):
        if not event.wait(self.HOLD_S):
            self.timed_out.append(what)

    def on_checkpoint_saved(self, trainer, saved):
        # After HubSyncCallback's (it is earlier among the callbacks): the save is queued. On the checkpoint writer
        # thread, ahead of the final save's announcement, which waits for that thread.
        if saved.step == self.newest and not saved.final:
            self.newest_queued.set()
            self.wait(self.next_started, "the commit after the held one")

    def on_train_end(self, trainer, pl_module):
        self.landed_during_training = messages(self.hub)
        self.ended.set()


def test_training_never_waits_for_a_slow_hub_and_the_newest_save_wins(hub, tmp_path, monkeypatch):
    held = CommitsHeldUntilTrainingEnds(hub, monkeypatch, newest=8)
    # save_top_k=1: each save deletes the previous folder while its push may still be in flight.
    _, sync = fit(tmp_path, hub, hub_strategy="checkpoint", every=1, top_k=1, max_steps=8, callbacks=[held])
    assert held.landed_during_training == [], "the training loop waited for the Hub"
    assert held.timed_out == []
    history = messages(hub)
    assert history[-1] == "End of training", "fit returned after the final push landed"
    assert sync.metrics["hub/pushes_superseded"] >= 1 and sync.metrics["hub/pushes_failed"] == 0
    first = hub.files(REPO, revision=hub.commits(REPO)[1]["oid"])  # pushed after its local folder was rotated away
    assert first["model.safetensors"] == first["last-checkpoint/model.safetensors"]
    # Latest wins: while the first push was held, each newer save replaced the one queued before it, so the next
    # commit is the newest save's; none of the saves queued in between landed.
    held_step = int(history[0].rsplit(" ", 1)[1])
    assert held_step < 7, f"saves were queued behind the held push: {history}"
    assert history[1:] == ["Training in progress, step 8", "End of training"], \
        f"the push after the held one (step {held_step}) is the newest save's (8), not an older one queued behind it"


class HubDown(L.Callback):
    def __init__(self, hub, at_step=None, up_at_step=None):
        self.hub, self.at_step, self.up_at_step = hub, at_step, up_at_step

    def on_train_start(self, trainer, pl_module):
        if self.at_step == 0:
            self.hub.down()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.up_at_step:
            self.hub.up()


def test_hub_down_after_setup_training_finishes_and_the_final_push_error_is_clear(hub, tmp_path, caplog):
    with pytest.raises(HubError) as err:
        fit(tmp_path, hub, hub_strategy="checkpoint", callbacks=[HubDown(hub, at_step=0)], max_retries=2)
    message = str(err.value)
    assert "The final push to the Hub" in message and "failed" in message
    assert "final weights are intact in" in message and str((tmp_path / "checkpoints/final").resolve()) in message
    assert (tmp_path / "checkpoints/final/model.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    assert any("Hub push 'Training in progress" in r.message and r.levelname == "WARNING" for r in caplog.records)
    assert messages(hub) == []


def test_hub_unreachable_at_setup_pushes_once_it_is_back(hub, tmp_path):
    hub.down()
    _, sync = fit(tmp_path, hub, hub_strategy="every_save", callbacks=[HubDown(hub, up_at_step=3)], max_retries=10)
    assert set(hub.files(REPO)) == ROOT | FINAL  # the deferred preflight created the repo
    assert messages(hub)[-1] == "End of training"


def test_bad_token_stops_the_run_in_setup_before_the_model_is_touched(hub, tmp_path):
    class NoModel(StandIn):
        def configure_model(self):
            raise AssertionError("configure_model ran before the Hub preflight")

    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, callbacks=[
                            TrainableCheckpoint(every_n_train_steps=1),
                            HubSyncCallback(hub_model_id=REPO, hf_token="hf_unknown", endpoint=hub.url)])
    with pytest.raises(HubError, match="Authentication failed"):
        trainer.fit(NoModel())


def test_upload_overlap_bench_runs_and_prints_its_summary():
    bench = Path(__file__).resolve().parents[1] / "bench/upload_overlap.py"
    args = ["--mb", "4", "--mbps", "4", "--cycles", "1", "--idle-steps", "20", "--warmup", "5", "--width", "64",
            "--depth", "2"]
    result = subprocess.run([sys.executable, bench, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines[-1].keys() == {"step_s_uploading", "step_s_idle", "ratio"}
    assert lines[-2]["upload_steps"] > 0 and lines[-2]["hub/pushes_done"] >= 2


class FirstStep(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step


def test_a_run_on_its_own_branch_leaves_main_alone_and_resumes_from_the_branch(hub, tmp_path):
    api = HfApi(endpoint=hub.url, token=ALICE)
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=b"the released model\n", path_in_repo="README.md", repo_id=REPO)
    main = hub.files(REPO)
    fit(tmp_path / "run", hub, hub_strategy="checkpoint", hub_revision="run-1", max_steps=6)
    assert hub.files(REPO) == main, "main is untouched until the user merges"
    branch = hub.files(REPO, revision="run-1")
    assert ROOT | FINAL | resumable("last-checkpoint") <= set(branch)
    assert branch["last-checkpoint/training_state.pt"] == (tmp_path / "run/checkpoints/checkpoint-6/training_state.pt"
                                                          ).read_bytes()

    checkpoint = download_resume_checkpoint(f"hf://{REPO}@run-1", HubToken(ALICE, "test"), endpoint=hub.url)
    assert checkpoint.resumable
    first = FirstStep()
    trainer = L.Trainer(max_steps=8, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path / "resumed",
                        callbacks=[TrainableCheckpoint(every_n_train_steps=2), first])
    module = StandIn()
    module.strict_loading = False  # a checkpoint holds the trainable weights only, as TheWorldModule loads it
    trainer.fit(module, ckpt_path=str(checkpoint.path))
    assert first.step == 6 and trainer.global_step == 8


class RateLimitedAtTheEnd(L.Callback):
    def __init__(self, hub):
        self.hub = hub

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == trainer.max_steps:  # before the final push is queued
            self.hub.faults = Faults(error_rate=1.0, error_status=429, retry_after_s=1, paths=r"/commit/")
            threading.Thread(target=self.lift_after_the_first_429, daemon=True).start()

    def lift_after_the_first_429(self):
        # Whenever the final commit comes (a busy machine may take seconds), it is answered 429 once.
        while not any(status == 429 for _, _, status in self.hub.request_log):
            time.sleep(0.01)
        self.hub.faults = Faults()


def test_a_rate_limited_push_waits_as_retry_after_says(hub, tmp_path, caplog):
    """The Hub answers the final commit 429 with Retry-After: 1: the push waits the second it was told (not the
    callback's 0.01 s backoff) and then lands."""
    with caplog.at_level(logging.WARNING):
        _, sync = fit(tmp_path, hub, hub_strategy="end", max_steps=2, callbacks=[RateLimitedAtTheEnd(hub)])
    assert messages(hub) == ["End of training"] and sync.metrics["hub/pushes_failed"] == 0
    waits = [r.message for r in caplog.records if "Retry-After" in r.message]
    assert waits and "answered 429 and asks to wait 1 s (Retry-After)" in waits[0]
    assert sync.metrics["hub/last_push_seconds"] >= 1.0
