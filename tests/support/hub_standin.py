"""HubSyncCallback in a real, in-process Lightning run of a tiny stand-in module against the local Hub."""

from pathlib import Path

import lightning as L
import torch
from support.accounts import ALICE, ALICE_LAPTOP  # noqa: F401 (the tests take the accounts from here too)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from theworld.callbacks import HubSyncCallback, TrainableCheckpoint
from theworld.config import TheWorldConfig
from theworld.run_summary import RunSummary

REPO = "alice/theworld-test"
ROOT = {"model.safetensors", "config.json", "README.md", "training_args.json", "data_yield.json"}
FINAL = {"final/model.safetensors", "final/config.json"}
OUR_MESSAGES = ("Training in progress, step ", "End of training")


def resumable(folder):
    return {f"{folder}/{name}" for name in ("model.safetensors", "config.json", "training_state.pt")}


class StandInSummary:
    """``run_summary`` as TheWorldModule hands it to the Hub sync, for a stand-in with ``model`` and ``world_config``;
    ``provenance`` as TheWorldModule hands it to TrainableCheckpoint, for samples without keys."""

    def provenance(self):
        return None

    def run_summary(self, step=None, final=False):
        step = self.global_step if step is None else step
        params = list(self.model.parameters())
        return RunSummary(model_config=self.world_config, dataset=None, step=step, max_steps=self.trainer.max_steps,
                          epochs=self.trainer.current_epoch + (not final), samples_seen=step * 4, effective_batch=4,
                          learning_rate=self.hparams.get("learning_rate", 0.0), world_tokens=784, wall_seconds=0.0,
                          final=final, trainable_params=sum(p.numel() for p in params if p.requires_grad),
                          total_params=sum(p.numel() for p in params))


class StandIn(StandInSummary, L.LightningModule):
    """What TrainableCheckpoint and HubSyncCallback need from TheWorldModule, on an 8x8 linear layer."""

    def __init__(self, learning_rate: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.ModuleDict({"projector": nn.Linear(8, 8), "frozen": nn.Linear(8, 8).requires_grad_(False)})
        self.world_config = TheWorldConfig(gemma_model_name="google/gemma-3-4b-it")

    def trainable_state_dict(self):
        return {k: v.detach() for k, v in self.model.named_parameters() if v.requires_grad}

    def training_step(self, batch, batch_idx):
        return self.model["projector"](self.model["frozen"](batch[0])).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=self.hparams.learning_rate)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(256, 8, generator=torch.Generator().manual_seed(0))), batch_size=4)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["state_dict"] = {f"model.{k}": v for k, v in self.trainable_state_dict().items()}
        checkpoint["theworld_config"] = self.world_config.to_dict()


def fit(root: Path, hub, *, max_steps=6, every=2, top_k=2, callbacks=(), logger=False, **sync_kwargs):
    """Trains StandIn for ``max_steps`` with a checkpoint every ``every`` steps, pushed to ``REPO`` as alice."""
    sync_kwargs = {"hub_model_id": REPO, "hf_token": ALICE, "retry_wait_s": 0.01, **sync_kwargs}
    sync = HubSyncCallback(endpoint=hub.url, **sync_kwargs)
    trainer = L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root,
        callbacks=[TrainableCheckpoint(every_n_train_steps=every, save_top_k=top_k), sync, *callbacks],
    )
    trainer.fit(StandIn())
    return trainer, sync


def messages(hub):
    """The callback's commit messages, oldest first (not the repo's "initial commit", nor other writers')."""
    return [c["message"] for c in hub.commits(REPO) if c["message"].startswith(OUR_MESSAGES)]


def assert_every_commit_consistent(hub, root: Path):
    """Each commit of the callback shows one complete state: the root weights of one save, a whole
    last-checkpoint/ of the same."""
    for commit in hub.commits(REPO):
        if not commit["message"].startswith(OUR_MESSAGES):
            continue
        tree = hub.files(REPO, revision=commit["oid"])
        assert ROOT <= tree.keys(), commit["message"]
        last = {p for p in tree if p.startswith("last-checkpoint/")}
        assert last in (set(), resumable("last-checkpoint")), commit["message"]
        if commit["message"] == "End of training":
            assert tree["model.safetensors"] == tree["final/model.safetensors"]
            assert tree["final/model.safetensors"] == (root / "checkpoints/final/model.safetensors").read_bytes()
        else:
            step = int(commit["message"].rsplit(" ", 1)[1])
            local = (root / f"checkpoints/checkpoint-{step}/model.safetensors").read_bytes()
            assert tree["model.safetensors"] == local and tree.get("last-checkpoint/model.safetensors", local) == local
