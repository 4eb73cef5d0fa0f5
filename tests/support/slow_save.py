"""Test-only callback: makes the N-th checkpoint save hang mid-write so a test can SIGKILL it."""

import os
import time
from pathlib import Path

import lightning as L

import theworld.callbacks.checkpoint as checkpoint_module


class HangOnSave(L.Callback):
    """After ``model.safetensors`` of save number ``hang_at`` is written (before the folder is renamed
    into place), touch ``marker`` and sleep, so the process dies mid-save when killed."""

    def __init__(self, hang_at: int = 2, marker: str = "saving.marker"):
        self.hang_at = hang_at
        self.marker = Path(marker)

    def on_fit_start(self, trainer, pl_module):
        original = checkpoint_module.save_weights
        calls = {"n": 0}

        def save_weights_then_hang(weights, config, directory, **options):
            original(weights, config, directory, **options)
            calls["n"] += 1
            if calls["n"] == self.hang_at:
                self.marker.write_text(str(directory))
                time.sleep(600)

        checkpoint_module.save_weights = save_weights_then_hang
        os.environ["THEWORLD_TEST_HANG_INSTALLED"] = "1"
