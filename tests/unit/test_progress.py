"""TrainingProgress's lines in a log: the first right after the first step, and an ETA that a slow first step does not
swing."""

import logging
import re
import time
from types import SimpleNamespace

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from theworld.callbacks import progress
from theworld.callbacks.progress import StepRate, TrainingProgress


def test_the_rate_leaves_out_the_first_step():
    """A 60 s first step (workers starting, kernels chosen), then 1 s a step: 1 s a step from the second on."""
    rate = StepRate()
    assert rate.update(60.0, 1) is None
    assert [rate.update(60.0 + step - 1, step) for step in (2, 10, 50)] == [1.0, 1.0, 1.0]


def test_a_resumed_run_starts_its_average_at_its_own_first_step():
    rate = StepRate()
    assert rate.update(100.0, 401) is None
    assert rate.update(102.0, 403) == 1.0


class _Linear(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lines_come_at_the_first_step_then_every_n_with_a_steady_eta(tmp_path, caplog, monkeypatch):
    """A real Lightning fit of 120 steps of 2 accumulated batches, on a clock where step 1 takes 60 s and each
    later step 1 s: lines at steps 1, 50, 100 and 120 (one each, though two batches end at every step), the
    first with the first step's time, the others with the ETA of 1 s a step."""
    def perf_counter() -> float:  # the first step ends at 60 s, each later one 1 s after the one before
        return 0.0 if trainer.global_step == 0 else 59.0 + trainer.global_step

    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=perf_counter, strftime=time.strftime,
                                                          gmtime=time.gmtime))
    trainer = L.Trainer(max_steps=120, accumulate_grad_batches=2, callbacks=[TrainingProgress(interactive=False)],
                        logger=False, enable_checkpointing=False, default_root_dir=tmp_path, accelerator="cpu")
    data = DataLoader(TensorDataset(torch.randn(480, 2)), batch_size=2)
    with caplog.at_level(logging.INFO):
        trainer.fit(_Linear(), data)
    lines = [record.getMessage() for record in caplog.records if re.match(r"step \d+/", record.getMessage())]
    assert [int(re.match(r"step (\d+)", line)[1]) for line in lines] == [1, 50, 100, 120]
    assert re.fullmatch(r"step 1/120 \| train/loss [\d.]+ \| first step 60\.0 s", lines[0]), lines[0]
    assert [line.rpartition("ETA ")[2] for line in lines[1:]] == ["00:01:10", "00:00:20", "00:00:00"]
