"""Provenance that scales: each save writes only its new rows (a delta), a push sends only the deltas the Hub lacks,
pruning keeps every delta a kept checkpoint needs, a resume reads provenance.json alone, init_from carries a stage."""

import os
import shutil
from pathlib import Path

import lightning as L
import pyarrow.parquet as pq
from huggingface_hub import snapshot_download
from support.accounts import ALICE
from support.cli_runs import SHORT, assert_resumed, fit, provenance
from support.hub_standin import REPO, StandIn

from theworld.callbacks import HubSyncCallback, TrainableCheckpoint
from theworld.provenance import PROVENANCE_KEY, TrainedSamples, provenance_dataset, read_history


def test_each_save_writes_only_the_rows_since_the_previous_one(straight_run):
    checkpoints = straight_run / "checkpoints"
    deltas = sorted((checkpoints / "provenance").iterdir())
    assert [p.name.split("-")[:4] for p in deltas] == [["stage0", "steps", "000000", "000003"],
                                                       ["stage0", "steps", "000004", "000007"]]
    # 8 samples a step: each file holds its 4 steps' 32 rows, not the history before them.
    assert [pq.read_table(p)["step"].to_pylist() for p in deltas] == [
        [s for s in range(0, 4) for _ in range(8)], [s for s in range(4, 8) for _ in range(8)]]
    assert [d.name for d in read_history(checkpoints / "checkpoint-4").deltas] == [deltas[0].name]
    assert [d.name for d in read_history(checkpoints / "final").deltas] == [p.name for p in deltas]
    assert read_history(checkpoints / "final").rows == 64 == provenance_dataset(checkpoints / "final").count_rows()


class KeyedStandIn(StandIn):
    """StandIn whose samples have keys, recorded as TheWorldModule records them: 3 a step, while its run summary
    counts step x batch (4) samples, so that the card's row count shows which it counts."""

    def __init__(self):
        super().__init__()
        self.trained_samples = TrainedSamples()
        self.strict_loading = False  # checkpoints hold the trainable tensors only

    def training_step(self, batch, batch_idx):
        self.trained_samples.add(self.global_step, [f"uid-{self.global_step}-{i}" for i in range(3)])
        return super().training_step(batch, batch_idx)

    def provenance(self):
        return self.trained_samples.save(self.global_rank, self.trainer.world_size, self.global_step)

    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        checkpoint[PROVENANCE_KEY] = self.provenance()

    def on_load_checkpoint(self, checkpoint):
        self.trained_samples = checkpoint[PROVENANCE_KEY]


def keyed_fit(root: Path, max_steps: int, every: int, top_k: int = -1, ckpt_path=None, callbacks=()):
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root,
                        callbacks=[TrainableCheckpoint(every_n_train_steps=every, save_top_k=top_k), *callbacks])
    trainer.fit(KeyedStandIn(), ckpt_path=ckpt_path)


def keys_of(folder: Path) -> list[str]:
    return provenance_dataset(folder).to_table()["key"].to_pylist()


def expected_keys(steps: range) -> list[str]:
    return [f"uid-{step}-{i}" for step in steps for i in range(3)]


def test_a_push_sends_only_the_deltas_the_hub_lacks_and_kept_checkpoints_read_whole(hub, tmp_path):
    sync = HubSyncCallback(endpoint=hub.url, hub_model_id=REPO, hf_token=ALICE, retry_wait_s=0.01,
                           hub_strategy="all_checkpoints")
    keyed_fit(tmp_path, max_steps=6, every=2, top_k=2, callbacks=[sync])
    # One preupload per push (a push queued behind a running one may be replaced by the next): each delta was offered
    # once, by the first push after its save; the history already on the Hub was neither hashed nor sent again.
    offered = [p.split("-")[2] for paths in hub.offered for p in paths if p.startswith("provenance/")]
    assert sorted(offered) == ["000000", "000002", "000004"]
    # checkpoint-2 was pruned; every folder the Hub keeps reads whole from the deltas it keeps.
    snapshot = Path(snapshot_download(REPO, token=ALICE, endpoint=hub.url, cache_dir=tmp_path / "cache"))
    assert sorted(p.name for p in snapshot.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    assert keys_of(snapshot / "checkpoint-4") == expected_keys(range(4))
    for folder in ("checkpoint-6", "last-checkpoint", "final", "."):
        assert keys_of(snapshot / folder) == expected_keys(range(6)), folder
    assert "| provenance | each trained sample's key: `provenance/`" in (snapshot / "README.md").read_text()
    assert "(18 rows)" in (snapshot / "README.md").read_text()


class StagingSpy(HubSyncCallback):
    """Stages each push after the previous one has landed, and records the provenance deltas each push staged."""

    def __init__(self, **options):
        super().__init__(**options)
        self.staged: list[list[str]] = []

    def _submit(self, trainer, saved):
        assert self._uploader is not None and self._uploader.wait_idle(60)
        push = super()._submit(trainer, saved)
        self.staged.append(sorted(p.name.split("-")[2] for p in (push.folder / "provenance").glob("*.parquet")))
        return push


def test_without_hardlinks_a_push_stages_only_the_deltas_the_hub_lacks(hub, tmp_path, monkeypatch):
    def no_hardlinks(source, target):
        raise OSError(95, "Operation not supported")  # a filesystem without hardlinks: each staged file is a copy

    monkeypatch.setattr(os, "link", no_hardlinks)
    sync = StagingSpy(endpoint=hub.url, hub_model_id=REPO, hf_token=ALICE, retry_wait_s=0.01)
    keyed_fit(tmp_path, max_steps=6, every=2, callbacks=[sync])
    # Saves at steps 2, 4, 6 and final/: each copies its own new delta only, the final push none.
    assert sync.staged == [["000000"], ["000002"], ["000004"], []]
    snapshot = Path(snapshot_download(REPO, token=ALICE, endpoint=hub.url, cache_dir=tmp_path / "cache"))
    assert keys_of(snapshot / "final") == expected_keys(range(6))


def test_local_pruning_keeps_every_delta_a_kept_checkpoint_needs(tmp_path):
    keyed_fit(tmp_path, max_steps=6, every=2)
    checkpoints = tmp_path / "checkpoints"
    # Resumed from the older checkpoint-2 with saves every 3 steps: checkpoint-4 of the first session stays (its
    # delta of steps 2-3 with it), checkpoint-6 is written anew and the first session's steps 4-5 are named by no
    # checkpoint any more.
    keyed_fit(tmp_path, max_steps=6, every=3, ckpt_path=checkpoints / "checkpoint-2")
    assert keys_of(checkpoints / "checkpoint-4") == expected_keys(range(4))
    for folder, steps in {"checkpoint-2": 2, "checkpoint-3": 3, "checkpoint-6": 6, "final": 6}.items():
        assert keys_of(checkpoints / folder) == expected_keys(range(steps)), folder
    named = {d.name for manifest in checkpoints.glob("*/provenance.json") for d in read_history(manifest.parent).deltas}
    assert {p.name for p in (checkpoints / "provenance").iterdir()} == named


def test_resume_reads_provenance_json_alone_and_continues_the_deltas(straight_run, demo_dir, tmp_path):
    shutil.copytree(straight_run / "checkpoints", tmp_path / "checkpoints", symlinks=True)
    # The rows of steps 0-3 made unreadable: a resume that read the history would fail on them.
    earlier = read_history(tmp_path / "checkpoints/checkpoint-4").deltas[0].name
    (tmp_path / "checkpoints/provenance" / earlier).write_bytes(b"not parquet")
    result = fit(demo_dir, *SHORT, "--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir",
                 tmp_path, "--ckpt_path", tmp_path / "checkpoints/checkpoint-4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_resumed(tmp_path, straight_run, from_step=4)
    final = read_history(tmp_path / "checkpoints/final")
    assert final.deltas[0].name == earlier and (tmp_path / "checkpoints/provenance" / earlier).read_bytes() == (
        b"not parquet")
    # The resumed session wrote the rows of steps 4-7 alone, the same as the uninterrupted run trained.
    assert [(d.first_step, d.last_step, d.rows) for d in final.deltas] == [(0, 3, 32), (4, 7, 32)]
    resumed_rows = pq.read_table(tmp_path / "checkpoints/provenance" / final.deltas[1].name)
    assert list(zip(*(resumed_rows[c].to_pylist() for c in ("step", "rank", "key")))) == provenance(
        straight_run / "checkpoints/final")[32:]


def test_init_from_carries_the_earlier_stage_tagged_by_stage(straight_run, demo_dir, tmp_path):
    stage_one = straight_run / "checkpoints/final"
    result = fit(demo_dir, "--trainer.max_steps", "2", "--checkpoint.every_n_train_steps", "100",
                 "--trainer.val_check_interval", "100", "--data.batch_size", "8", "--trainer.default_root_dir",
                 tmp_path, "--trainer.logger.init_args.save_dir", tmp_path, "--model.init_from", stage_one)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"carries the 64 rows of stage 0 from {stage_one}; its own rows are stage 1" in result.stderr
    rows = provenance_dataset(tmp_path / "checkpoints/final").to_table().to_pylist()
    assert [(r["step"], r["rank"], r["key"]) for r in rows[:64]] == provenance(stage_one)
    assert {r["stage"] for r in rows[:64]} == {0} and len(rows) == 80
    assert [(r["stage"], r["step"]) for r in rows[64:]] == [(1, s) for s in (0, 1) for _ in range(8)]
    assert read_history(tmp_path / "checkpoints/final").stage == 1


def test_init_from_weights_without_provenance_says_it_starts_a_new_history(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    trained, line = TrainedSamples.next_stage(tmp_path)
    assert trained.history.stage == 0 and not trained.history.deltas
    assert line == (f"{tmp_path} has no provenance.json: this run's provenance starts a new history (stage 0), "
                    f"without the samples those weights were trained on.")


def test_memory_holds_only_the_keys_since_the_last_save():
    trained = TrainedSamples()
    for step in range(3):
        trained.add(step, [f"k{step}"])
    first = trained.save(rank=0, world_size=1, step=3)
    trained.add(3, ["k3"])
    second = trained.save(rank=0, world_size=1, step=4)
    assert first.rows["key"].to_pylist() == ["k0", "k1", "k2"] and second.rows["key"].to_pylist() == ["k3"]
    assert [(d.first_step, d.last_step, d.rows) for d in second.history.deltas] == [(0, 2, 3), (3, 3, 1)]
