"""The ``hub_strategy`` table: one :class:`Strategy` record per strategy, read by everything that depends on it (the
Hub sync's commit plans, :mod:`theworld.hub.commits`; the model card; ``theworld estimate``'s push size; the CLI's
choices and messages).

Adding a strategy is one file and one line::

    from theworld.hub.strategies import Strategy, register_strategy

    register_strategy(Strategy(
        name="end_with_state",
        summary="only the final push, with last-checkpoint/",
        pushes_intermediate_saves=False, last_checkpoint=True, checkpoint_folders=False,
        card_text="`last-checkpoint/` holds the last resumable checkpoint. {final} {resume}.",
    ))

imported before ``theworld`` parses its config (``hub.hub_strategy`` then accepts it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from theworld.layout import LAST_CHECKPOINT, WEIGHTS_NAME
from theworld.registry import Registry

# Phrases a strategy's card_text may use, filled for the repo the card describes.
FINAL_TEXT = "The final weights are also in `final/` once training has ended."
RESUME_TEXT = "Resume training exactly where it stopped with `theworld fit --config ... --ckpt_path hf://{repo_id}`"
NEW_STAGE_TEXT = (
    "Start a new training stage from these weights with `theworld fit --config ... --model.init_from hf://{repo_id}`"
)


@dataclass(frozen=True)
class Strategy:
    """What a ``hub_strategy`` pushes beside what every push holds (the root weights and config, the card, the report
    files, training_args.json, data_yield.json, the provenance deltas), what its commits delete, and what the card
    says about the repo it leaves.

    Every commit, whatever the strategy, replaces ``samples/`` and ``runs/`` (remote files there that the push lacks
    are deleted) and never deletes a root file, anything in ``final/`` or ``provenance/``, or a file of a folder it
    does not manage (a user's files in the repo stay).

    - ``summary``: what a push holds, in a few words (the docs' table);
    - ``pushes_intermediate_saves``: each intermediate save is pushed; otherwise only the final one;
    - ``last_checkpoint``: ``last-checkpoint/``, the newest resumable folder, replaced as a whole by each push (an
      exact resume from the repo needs it);
    - ``checkpoint_folders``: every resumable ``checkpoint-N/`` kept locally; a remote one with a
      training_state.pt that the push lacks (one the local rotation removed) is pruned;
    - ``card_text``: how to train on from the repo, for its model card; ``{repo_id}``, ``{final}`` (:data:`FINAL_TEXT`),
      ``{resume}`` (:data:`RESUME_TEXT`) and ``{new_stage}`` (:data:`NEW_STAGE_TEXT`) are filled in.
    """

    name: str
    summary: str
    pushes_intermediate_saves: bool
    last_checkpoint: bool
    checkpoint_folders: bool
    card_text: str

    def card(self, repo_id: str) -> str:
        """The card's paragraph on training on from ``repo_id`` as this strategy leaves it."""
        phrases = {"final": FINAL_TEXT, "resume": RESUME_TEXT, "new_stage": NEW_STAGE_TEXT}
        filled = {name: text.format(repo_id=repo_id) for name, text in phrases.items()}
        return self.card_text.format(repo_id=repo_id, **filled)

    def push_bytes(self, weights: int, training_state: int) -> dict[str, int]:
        """Bytes a push sends, by what it holds, from the bytes of the trainable weights and of the rest of a
        resumable folder's training state (``theworld estimate``)."""
        sizes = {WEIGHTS_NAME: weights}
        if self.last_checkpoint:
            sizes[f"{LAST_CHECKPOINT}/ (weights + training state)"] = weights + training_state
        if self.checkpoint_folders:
            sizes["checkpoint-{step}/ (weights + training state)"] = weights + training_state
        return sizes


STRATEGIES: Registry[Strategy] = Registry("hub.hub_strategy", "Hub strategy")


def register_strategy(strategy: Strategy) -> Strategy:
    """Makes ``strategy`` a value of ``hub.hub_strategy``."""
    return STRATEGIES.register(strategy.name, strategy)


def resumable_names() -> tuple[list[str], list[str]]:
    """The strategies that push ``last-checkpoint/`` (a repo to resume from exactly) and those that do not."""
    pushing = [name for name, strategy in STRATEGIES.items() if strategy.last_checkpoint]
    return pushing, [name for name in STRATEGIES if name not in pushing]


if TYPE_CHECKING:
    Name = str  # a registered strategy's name
else:
    # `strategies.Name` is the Literal of the strategies registered when it is read (by the CLI's parser).
    __getattr__ = STRATEGIES.choices_getattr("Name")


register_strategy(
    Strategy(
        name="every_save",
        summary="latest weights",
        pushes_intermediate_saves=True,
        last_checkpoint=False,
        checkpoint_folders=False,
        card_text="This repository holds weights only, no training state: training cannot resume exactly from it. "
        "{final} {new_stage} (fresh optimizer and data position).",
    )
)
register_strategy(
    Strategy(
        name="checkpoint",
        summary="+ last-checkpoint/ to resume from",
        pushes_intermediate_saves=True,
        last_checkpoint=True,
        checkpoint_folders=False,
        card_text="`last-checkpoint/` holds the newest resumable checkpoint (weights and training state). {final} "
        "{resume}.",
    )
)
register_strategy(
    Strategy(
        name="all_checkpoints",
        summary="+ every checkpoint-N/, pruned as locally",
        pushes_intermediate_saves=True,
        last_checkpoint=True,
        checkpoint_folders=True,
        card_text="Every kept checkpoint is in `checkpoint-{{step}}/`, the newest also in `last-checkpoint/`. "
        "{final} {resume}, or from an earlier checkpoint with `--ckpt_path hf://{repo_id}/checkpoint-{{step}}`.",
    )
)
register_strategy(
    Strategy(
        name="end",
        summary="only the final weights",
        pushes_intermediate_saves=False,
        last_checkpoint=False,
        checkpoint_folders=False,
        card_text="This repository holds the final weights only (also in `final/`), no training state: training "
        "cannot resume exactly from it. {new_stage} (fresh optimizer and data position).",
    )
)
