"""A Hub strategy registered from outside theworld, as docs/hub.md's "Adding a strategy" shows: one push at the end
of training, with last-checkpoint/ beside the final weights (one upload, and a repo to resume from exactly).
Imported before the CLI runs."""

from theworld.hub.strategies import Strategy, register_strategy

END_WITH_STATE = register_strategy(Strategy(
    name="end_with_state",
    summary="only the final push, with last-checkpoint/",
    pushes_intermediate_saves=False,
    last_checkpoint=True,
    checkpoint_folders=False,
    card_text="This repository was pushed once, at the end of training, with its last resumable checkpoint in "
              "`last-checkpoint/`. {final} {resume}.",
))
