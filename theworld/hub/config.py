"""The ``hub:`` settings."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from theworld.hub import strategies


@dataclass
class HubConfig:
    """The ``hub:`` config group (``--hub.<name>`` on the command line).

    Attributes:
        push_to_hub: Push checkpoints to a Hub repo in the background while training.
        hub_model_id: The repo to push to: your-username/repo-name (created if missing).
        hub_strategy: What each push holds: every_save (latest weights), checkpoint (+ last-checkpoint/ to resume
            from), all_checkpoints (+ every checkpoint-N/, pruned as locally), end (only the final weights), or a
            strategy registered with theworld.hub.strategies.register_strategy (docs/hub.md, "Adding a strategy").
        hub_private_repo: Create the repo private (a public repo of that name is refused).
        hf_token: A token with write access; prefer the HF_TOKEN environment variable or `hf auth login`.
        hub_tag: Tag the final commit with this name (it must not exist yet).
        hub_revision: Push every commit of the run to this branch (created from main if missing), leaving main
            untouched until you merge; resume from it with --ckpt_path hf://user/repo@<branch>.
        push_logs: Also push TensorBoard event files of the losses and validations under runs/ (the Hub's
            training metrics tab shows them).
        hub_final_push_timeout: Seconds the end of training (or an interrupted run) waits for its last push; past
            it the run fails, and the local checkpoint stays.
        hub_request_timeout: Seconds any one Hub request may go without progress (connecting, sending, waiting for
            the answer) before it counts as a dropped connection and is retried; a stalled connection cannot hold
            a push, or the pushes queued behind it.

    Example (YAML)::

        hub:
          push_to_hub: true
          hub_model_id: your-username/theworld-datacomp
          hub_strategy: every_save     # a name of theworld.hub.strategies.STRATEGIES
          hub_private_repo: false
          hub_tag: v1.0-final          # optional: tag on the final commit
          hub_revision: run-lr1e-4     # optional: a branch for this run; main stays as it is
          push_logs: true              # optional: TensorBoard curves under runs/
    """

    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_strategy: strategies.Name = "every_save"
    hub_private_repo: bool = False
    hf_token: str | None = None
    hub_tag: str | None = None
    hub_final_push_timeout: float = 3600.0
    hub_request_timeout: float = 120.0
    hub_revision: str | None = None
    push_logs: bool = False


def __getattr__(name: str):
    # The old type of hub_strategy, fixed to the built-in strategies; kept one release for code that imports it.
    if name == "HubStrategy":
        warnings.warn(
            "theworld.hub.config.HubStrategy is deprecated: hub_strategy takes any registered strategy; use "
            "theworld.hub.strategies.Name (or the names of theworld.hub.strategies.STRATEGIES).",
            DeprecationWarning,
            stacklevel=2,
        )
        return strategies.Name
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
