"""The names of TheWorld's checkpoint files and folders, locally and on the Hub, declared once, here; and
:class:`SavedCheckpoint`, the record of a folder written whole.

A checkpoint folder (``checkpoint-{step}/``, ``last``, ``final/``, the Hub's ``last-checkpoint/``) holds::

    model.safetensors    trainable tensors only, keys as in TheWorld.state_dict()
    config.json          what rebuilds the model (TheWorldConfig)
    training_state.pt    optimizer, LR scheduler, loop counters, data position (not in final/)
    provenance.json      which files of provenance/ hold the key of every sample trained on (theworld.provenance)

Beside the checkpoint folders (locally, and at the Hub repo's root), ``provenance/`` holds those files: one per save,
with the rows trained since the previous save.
"""

from dataclasses import dataclass
from pathlib import Path

from theworld.config import CONFIG_NAME

WEIGHTS_NAME = "model.safetensors"
TRAINING_STATE_NAME = "training_state.pt"
CHECKPOINT_EVALUATION_NAME = "evaluation.json"  # the latest benchmark evaluation during fit (checkpoint folders)

RESUME_FILES = (WEIGHTS_NAME, CONFIG_NAME, TRAINING_STATE_NAME)
WEIGHT_FILES = (WEIGHTS_NAME, CONFIG_NAME)
PROVENANCE_NAME = "provenance.json"  # in every checkpoint folder written since it was added; optional when reading
PROVENANCE_DIR = "provenance"  # the deltas, beside the checkpoint folders
LAST_LINK = "last"  # local: links to the newest checkpoint folder
FINAL_DIR = "final"  # local and on the Hub: the final weights
LAST_CHECKPOINT = "last-checkpoint"  # on the Hub: the newest resumable folder
TMP_MARKER = ".tmp-"  # in the name of a folder still being written


@dataclass(frozen=True)
class SavedCheckpoint:
    """A checkpoint folder complete on disk, as :class:`~theworld.callbacks.TrainableCheckpoint` announces it to the
    callbacks that implement ``on_checkpoint_saved(trainer, saved)`` (the Hub sync, whose commit planning in
    :mod:`theworld.hub.commits` reads it without Lightning).

    ``kept``: the resumable folders in the checkpoint folder once this save's rotation is done, oldest first (this
    one included unless it is ``final/``); a folder rotated away later is missing from the next record.
    """

    step: int
    path: Path
    final: bool
    kept: tuple[Path, ...]

    @property
    def newest_resumable(self) -> Path | None:
        return self.kept[-1] if self.kept else None
