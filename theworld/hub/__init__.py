"""Hugging Face Hub plumbing, one job a module; nothing here runs in the training step.

- :mod:`~theworld.hub.config`: the ``hub:`` settings
- :mod:`~theworld.hub.strategies`: the ``hub_strategy`` table (what each strategy pushes, prunes and says)
- :mod:`~theworld.hub.commits`: which files a push holds and what its commit sends and deletes (pure functions)
- :mod:`~theworld.hub.tokens`: the token (one :class:`HubToken` end to end) and keeping it out of files
- :mod:`~theworld.hub.refs`: repo ids and ``hf://user/repo[@revision][/folder]``
- :mod:`~theworld.hub.errors`: Hub failures as one paragraph that says what to do
- :mod:`~theworld.hub.preflight`: token, repo and write access (and a streamed dataset) checked before any weight
  loads
- :mod:`~theworld.hub.bases`: the base models found and pinned to a commit
- :mod:`~theworld.hub.downloads`: checkpoints downloaded for loading and resuming
- :mod:`~theworld.hub.card`: the model card (README.md)
- :mod:`~theworld.hub.uploader`: the background uploader behind :class:`~theworld.callbacks.HubSyncCallback`
- :mod:`~theworld.hub.session`: every request of huggingface_hub's HTTP client bounded in time

``HF_ENDPOINT`` (a private Hub) is honoured through huggingface_hub; functions also take ``endpoint=``.

Example::

    token = resolve_token()                        # HF_TOKEN or `hf auth login`
    api = preflight(HubConfig(push_to_hub=True, hub_model_id="alice/theworld"), token)
    checkpoint = download_resume_checkpoint("hf://alice/theworld@main", token)
"""

from theworld.hub import config as _config
from theworld.hub.bases import ModelSourceError, pin_base, pin_bases
from theworld.hub.config import HubConfig
from theworld.hub.downloads import HubCheckpoint, download_files, download_provenance, download_resume_checkpoint
from theworld.hub.errors import HubError, HubUnreachableError, explain
from theworld.hub.preflight import check_dataset, preflight
from theworld.hub.refs import is_hf_ref, is_hub_repo_id, parse_hf_ref, validate_repo_id
from theworld.hub.tokens import HubToken, is_secret_key, redact, resolve_token

__all__ = [
    "HubCheckpoint",
    "HubConfig",
    "HubError",
    "HubToken",
    "HubUnreachableError",
    "ModelSourceError",
    "check_dataset",
    "download_files",
    "download_provenance",
    "download_resume_checkpoint",
    "explain",
    "is_hf_ref",
    "is_hub_repo_id",
    "is_secret_key",
    "parse_hf_ref",
    "pin_base",
    "pin_bases",
    "preflight",
    "redact",
    "resolve_token",
    "validate_repo_id",
]


def __getattr__(name: str):
    if name == "HubStrategy":
        return _config.HubStrategy  # deprecated: its warning comes from there
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
