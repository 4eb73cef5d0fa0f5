"""``JsonlPredictionWriter``: ``theworld predict`` answers as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


class JsonlPredictionWriter(BasePredictionWriter):
    """Writes one ``{"image": ..., "text": ...}`` line per image as each batch is decoded.

    Example::

        theworld predict --config configs/demo.yaml --model.init_from runs/demo/checkpoints/final \\
            --data.predict_data my_images/ --predictions.output_path captions.jsonl
    """

    def __init__(self, output_path: str = "predictions.jsonl"):
        """
        Args:
            output_path: The JSON-lines file of captions; a predict run replaces what an earlier one wrote there.
        """
        super().__init__(write_interval="batch")
        self.output_path = Path(output_path)
        self._written = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        self._written = 0
        if trainer.is_global_zero:
            self.output_path.parent.mkdir(parents=True, exist_ok=True)
            self.output_path.write_text("")

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        with open(self.output_path, "a") as fh:
            for row in prediction:
                fh.write(json.dumps(row) + "\n")
        self._written += len(prediction)

    def on_predict_end(self, trainer, pl_module) -> None:
        rank_zero_info(f"theworld: wrote {self._written} captions to {self.output_path.resolve()}")
