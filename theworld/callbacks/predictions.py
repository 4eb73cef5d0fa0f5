"""``JsonlPredictionWriter``: ``theworld predict`` answers as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter


class JsonlPredictionWriter(BasePredictionWriter):
    """Appends one ``{"image": ..., "text": ...}`` line per image as each batch is decoded.

    Example::

        theworld predict --config configs/demo.yaml --ckpt_path runs/demo/checkpoints/last \\
            --data.predict_data my_images/ --predictions.output_path captions.jsonl
    """

    def __init__(self, output_path: str = "predictions.jsonl"):
        super().__init__(write_interval="batch")
        self.output_path = Path(output_path)

    def on_predict_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.output_path.parent.mkdir(parents=True, exist_ok=True)
            self.output_path.write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx) -> None:
        with open(self.output_path, "a") as fh:
            for row in prediction:
                fh.write(json.dumps(row) + "\n")
