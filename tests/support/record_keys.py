"""Test-only callback: records which samples each rank trains on at each step."""

import json
from pathlib import Path

import lightning as L


class RecordKeys(L.Callback):
    """Appends ``{"step": N, "keys": [...]}`` per training batch to ``{out_dir}/keys-rank{R}.jsonl``."""

    def __init__(self, out_dir: str = "keys"):
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / f"keys-rank{trainer.global_rank}.jsonl", "a") as fh:
            fh.write(json.dumps({"step": trainer.global_step, "keys": list(batch["key"])}) + "\n")
