"""Test-only callbacks that mark a moment of `theworld fit` so a test can SIGKILL it there (or act, then go on).

Like slow_save.HangOnSave (a save that hangs mid-write), they are installed with
``--trainer.callbacks+=kill_points.<Class>`` and write ``marker`` when their moment comes.
"""

import itertools
import time
from pathlib import Path

import lightning as L
from huggingface_hub import HfApi


class PauseInStep(L.Callback):
    """In the step after ``at_step`` optimizer steps (gradients computed, weights not yet updated) touch
    ``marker`` and wait until ``release`` exists; without ``release``, until the test kills the process."""

    def __init__(self, at_step: int, marker: str, release: str | None = None):
        self.at_step = at_step
        self.marker = Path(marker)
        self.release = Path(release) if release else None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step != self.at_step:
            return
        self.marker.write_text(str(self.at_step))
        while self.release is None or not self.release.exists():
            time.sleep(0.05)


class MarkUpload(L.Callback):
    """Touches ``marker`` when the ``at``-th Hub commit of this run starts (on the uploader thread); the upload
    then goes on, as slowly as the test's Hub lets it."""

    def __init__(self, at: int, marker: str):
        self.at = at
        self.marker = Path(marker)

    def on_fit_start(self, trainer, pl_module):
        original = HfApi.create_commit
        count = itertools.count(1)

        def create_commit(api, *args, **kwargs):
            if next(count) == self.at:
                self.marker.write_text(str(self.at))
            return original(api, *args, **kwargs)

        HfApi.create_commit = create_commit
