"""How long one checkpoint save blocks the training loop, against a bare ``save_file``.

A real ``Trainer`` with ``TrainableCheckpoint`` trains a module whose trainable tensors are
TheWorld's projection-only set at Gemma3-4B size (world projector 64 -> 2560 -> 2560 plus the two
world-token embeddings, ~6.7 M fp32 parameters) with AdamW, so each save carries weights +
optimizer state. Timed in one run:

- ``save_block_s``: wall time of ``trainer.save_checkpoint`` as the loop sees it (median of 5);
- ``raw_save_s``: ``safetensors.torch.save_file`` of the same trainable tensors (median of 5).

Prints JSON lines; the last is ``{"save_block_s", "raw_save_s", "ratio", ...}`` (goal: ratio <= 1.5).

    python bench/save_blocking.py [--hidden 2560]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import save_file
from torch import nn

from theworld.callbacks.checkpoint import TrainableCheckpoint
from theworld.config import TheWorldConfig
from theworld.world import WorldProjector


class ProjectorOnly(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.projector = WorldProjector(64, hidden)
        self.world_token_embeds = nn.Parameter(torch.randn(2, hidden))

    def trainable_state_dict(self):
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}


class BenchModule(L.LightningModule):
    def __init__(self, hidden: int):
        super().__init__()
        self.model = ProjectorOnly(hidden)
        self.world_config = TheWorldConfig()

    def training_step(self, batch, batch_idx):
        return self.model.projector(batch).pow(2).mean() + self.model.world_token_embeds.pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-4)

    def trainable_state_dict(self):  # TrainableCheckpoint writes final/ from it
        return self.model.trainable_state_dict()

    def provenance(self):  # and final/provenance.parquet from this: these samples have no keys
        return None

    def on_save_checkpoint(self, checkpoint):
        checkpoint["state_dict"] = {f"model.{k}": v for k, v in self.trainable_state_dict().items()}
        checkpoint["theworld_config"] = self.world_config.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        module = BenchModule(args.hidden)
        callback = TrainableCheckpoint(dirpath=str(tmp / "ckpts"), every_n_train_steps=None, save_last=False)
        trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[callback])
        trainer.fit(module, torch.utils.data.DataLoader(torch.randn(8, 16, 64), batch_size=None))
        tensors = module.model.trainable_state_dict()
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())

        blocks, raws, totals = [], [], []
        for i in range(args.repeats):
            start = time.perf_counter()
            trainer.save_checkpoint(str(tmp / f"checkpoint-{i}"))
            blocks.append(time.perf_counter() - start)
            trainer.strategy.checkpoint_io.wait()
            totals.append(time.perf_counter() - start)
            start = time.perf_counter()
            save_file(tensors, str(tmp / f"raw-{i}.safetensors"))
            raws.append(time.perf_counter() - start)
            print(json.dumps({"repeat": i, "save_block_s": blocks[-1], "save_total_s": totals[-1],
                              "raw_save_s": raws[-1]}))
        block, raw = statistics.median(blocks), statistics.median(raws)
        print(json.dumps({
            "save_block_s": round(block, 6), "raw_save_s": round(raw, 6), "ratio": round(block / raw, 3),
            "save_total_s": round(statistics.median(totals), 4), "trainable_mb": round(nbytes / 2**20, 1),
        }))


if __name__ == "__main__":
    main()
