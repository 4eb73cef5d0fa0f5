"""Hugging Face Hub plumbing: the ``hub:`` config group, tokens, ``hf://`` references."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HubStrategy = Literal["every_save", "checkpoint", "all_checkpoints", "end"]


@dataclass
class HubConfig:
    """The ``hub:`` config group (``--hub.<name>`` on the command line).

    Example (YAML)::

        hub:
          push_to_hub: true
          hub_model_id: your-username/theworld-datacomp
          hub_strategy: every_save
          hub_private_repo: false
    """

    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_strategy: HubStrategy = "every_save"
    hub_private_repo: bool = False
    hf_token: str | None = None
    hub_tag: str | None = None
