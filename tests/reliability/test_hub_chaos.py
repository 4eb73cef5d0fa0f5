"""Hub chaos through the real HubSyncCallback, in-process on a stand-in module: 5xx bursts, a second writer
(412 conflicts), dropped LFS uploads, commits applied but answered 500. Every push must land once, whole."""

import random
import time

import lightning as L
import pytest
from hub_server import Faults
from huggingface_hub import CommitOperationAdd, HfApi
from support.hub_standin import ALICE, ALICE_LAPTOP, REPO, assert_every_commit_consistent, fit, messages

pytestmark = pytest.mark.reliability


class FaultSchedule(L.Callback):
    """Sets ``hub.faults`` when the step count reaches a key of ``schedule``. Each step also sleeps ``step_s``,
    so the uploader (which takes milliseconds here) sees every phase."""

    def __init__(self, hub, schedule: dict[int, Faults], step_s: float = 0.05):
        self.hub, self.schedule, self.step_s = hub, schedule, step_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in self.schedule:
            self.hub.faults = self.schedule[trainer.global_step]
        time.sleep(self.step_s)


def statuses(hub, *codes, path: str = "") -> int:
    """How many requests (to a URL containing ``path``) the Hub answered with one of ``codes`` (0: dropped)."""
    return sum(status in codes and path in url for _, url, status in hub.request_log)


def assert_landed_once(hub, root, sync):
    """The final push landed, and no push made two commits.

    A done push made one commit. A superseded or failed one made at most one: its commit may have landed with
    the answer lost (a 500 after applying), and then a newer push replaced it before a retry could tell."""
    history = messages(hub)
    assert history[-1] == "End of training"
    assert len(history) == len(set(history)), history
    metrics = sync.metrics
    attempted = metrics["hub/pushes_done"] + metrics["hub/pushes_superseded"] + metrics["hub/pushes_failed"]
    assert metrics["hub/pushes_done"] <= len(history) <= attempted, (history, metrics)
    assert hub.files(REPO)["final/model.safetensors"] == (root / "checkpoints/final/model.safetensors").read_bytes()


def test_5xx_bursts_delay_pushes_but_lose_none(hub, tmp_path, fast_client_backoff, figures):
    """Two bursts where every request fails (503, then 500), shorter than the callback's retries."""
    burst = {2: Faults(error_rate=1.0, error_status=503), 5: Faults(),
             7: Faults(error_rate=1.0, error_status=500), 10: Faults()}
    _, sync = fit(tmp_path, hub, hub_strategy="all_checkpoints", every=1, top_k=-1, max_steps=12, max_retries=8,
                  callbacks=[FaultSchedule(hub, burst)])
    injected = {"503": statuses(hub, 503), "500": statuses(hub, 500)}
    figures.record("faults", kind="5xx burst (503)", injected=injected["503"])
    figures.record("faults", kind="5xx burst (500)", injected=injected["500"])
    assert injected["503"] and injected["500"], "both bursts hit the uploader"
    assert_landed_once(hub, tmp_path, sync)
    assert_every_commit_consistent(hub, tmp_path)
    assert sync.metrics["hub/pushes_failed"] == 0


def test_a_second_writer_mid_run_is_neither_clobbered_nor_fatal(hub, tmp_path, monkeypatch, figures):
    """Before each of the callback's first three commits alice's laptop commits to the same repo with the real
    client, so each of those commits names a stale parent and gets 412."""
    laptop = HfApi(endpoint=hub.url, token=ALICE_LAPTOP)
    original = HfApi.create_commit
    theirs = {}

    def create_commit(api, repo_id, operations, **kwargs):
        if api.token == ALICE and len(theirs) < 3:
            path = f"eval/results-{len(theirs)}.json"
            theirs[path] = f'{{"accuracy": 0.{len(theirs)}}}'.encode()
            original(laptop, repo_id, [CommitOperationAdd(path, theirs[path])], commit_message=f"Add {path}")
        return original(api, repo_id, operations, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    # all_checkpoints with save_top_k=2: pushes also delete (checkpoints pruned locally), the riskiest for
    # someone else's files.
    _, sync = fit(tmp_path, hub, hub_strategy="all_checkpoints", every=1, top_k=2, max_steps=6)
    conflicts = statuses(hub, 412)
    figures.record("faults", kind="412 stale parent (second writer)", injected=conflicts)
    assert conflicts == 3
    files = hub.files(REPO)
    assert {path: files.get(path) for path in theirs} == theirs, "the other writer's files survive every push"
    assert {p.split("/")[0] for p in files if p.startswith("checkpoint-")} == {"checkpoint-5", "checkpoint-6"}
    assert_landed_once(hub, tmp_path, sync)
    assert sync.metrics["hub/pushes_failed"] == 0


def test_connections_dropped_during_lfs_uploads_are_retried(hub, tmp_path, fast_client_backoff, figures):
    hub.faults = Faults(drop_rate=0.5, paths=r"/lfs-upload/", seed=3)
    _, sync = fit(tmp_path, hub, hub_strategy="checkpoint", every=1, top_k=-1, max_steps=6, max_retries=10)
    dropped = statuses(hub, 0, path="/lfs-upload/")
    figures.record("faults", kind="connection dropped during LFS PUT", injected=dropped)
    assert dropped >= 2
    assert_landed_once(hub, tmp_path, sync)
    assert_every_commit_consistent(hub, tmp_path)
    assert sync.metrics["hub/pushes_failed"] == 0


def test_every_commit_applied_but_answered_500_still_makes_one_commit_per_push(hub, tmp_path, figures):
    hub.faults = Faults(commit_500_after_apply=1000)
    _, sync = fit(tmp_path, hub, hub_strategy="checkpoint", every=1, top_k=-1, max_steps=6)
    answered_500 = statuses(hub, 500, path="/commit/")
    figures.record("faults", kind="commit applied, answered 500", injected=answered_500)
    assert answered_500 == len(messages(hub)), "every commit was answered 500"
    assert_landed_once(hub, tmp_path, sync)
    assert_every_commit_consistent(hub, tmp_path)


@pytest.mark.slow
def test_a_storm_of_every_fault_kind_for_40_steps(hub, tmp_path, fast_client_backoff, figures):
    """Every 3 steps the Hub switches to a random fault kind (or recovers), seeded; 40 steps, a push per step."""
    rng = random.Random(0)
    kinds = [Faults(error_rate=0.6, error_status=503), Faults(error_rate=0.6, error_status=502),
             Faults(drop_rate=0.5, paths=r"/lfs-upload/"), Faults(commit_500_after_apply=2),
             Faults(latency_s=0.2, paths=r"/commit/"), Faults()]
    schedule = {step: rng.choice(kinds) for step in range(0, 39, 3)}
    schedule[39] = Faults()  # the final push goes to a healthy Hub after its retries
    _, sync = fit(tmp_path, hub, hub_strategy="all_checkpoints", every=1, top_k=-1, max_steps=40, max_retries=30,
                  callbacks=[FaultSchedule(hub, schedule)])
    for kind, codes, path in (("storm: 5xx", (502, 503), ""), ("storm: dropped", (0,), ""),
                              ("storm: commit answered 500", (500,), "/commit/")):
        figures.record("faults", kind=kind, injected=statuses(hub, *codes, path=path))
    assert_landed_once(hub, tmp_path, sync)
    assert_every_commit_consistent(hub, tmp_path)
