"""The base models (Gemma, Cosmos): found before any weight loads, and pinned to the exact commit loaded."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id as hf_validate_repo_id

from theworld.config import CONFIG_NAME
from theworld.errors import UserError
from theworld.hub.errors import explain
from theworld.hub.tokens import HubToken
from theworld.retry import answer_of, describe_error, http_status

log = logging.getLogger(__name__)


class ModelSourceError(UserError):
    """A base model (``model.gemma_model_name`` / ``model.cosmos_model_name``) that ``from_pretrained`` cannot load."""


_COMMIT = re.compile(r"[0-9a-f]{40}")


def pin_base(
    name: str,
    field: str,
    revision: str | None = None,
    token: HubToken | str | None = None,
    subfolder: str | None = None,
    endpoint: str | None = None,
) -> tuple[str, str | None]:
    """Where a base model loads from: ``(absolute folder, None)`` or ``(Hub id, commit sha)``.

    Fails in about a second, before any weight loads, on a base model that loading would not find: a missing
    folder, an unknown or gated Hub id, a model neither on a reachable Hub nor in the local cache. A branch or tag
    ``revision`` (None: the default branch) is resolved to its commit, so a checkpoint records the exact base.

    Example:
        >>> pin_base("google/gemma-3-4b-it", "model.gemma_model_name")
        ('google/gemma-3-4b-it', '093f9f388b31de276ce2de164bdc2081324b9767')
        >>> pin_base("./nope", "model.gemma_model_name")
        ModelSourceError: model.gemma_model_name='./nope': there is no folder /work/nope. ...
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), None
    _refuse_missing_folder(name, field)
    if revision and _COMMIT.fullmatch(revision):
        return name, revision  # already pinned (and checked when it was)
    token = token if isinstance(token, HubToken) or token is None else HubToken(token, "the token argument")
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    file = f"{subfolder}/{CONFIG_NAME}" if subfolder else CONFIG_NAME
    who = f"the token from {token.source}" if token else "a request without a token (none was found)"
    reason = "HF_HUB_OFFLINE is set"
    if not constants.HF_HUB_OFFLINE:
        try:
            # The request from_pretrained starts with (a HEAD of the config), bounded by HF_HUB_ETAG_TIMEOUT.
            url = hf_hub_url(name, file, revision=revision, endpoint=endpoint)
            return name, get_hf_file_metadata(url, token=token.value if token else None).commit_hash
        except GatedRepoError:
            raise ModelSourceError(
                f"{field}={name!r} is gated: its licence must be accepted before it can be downloaded. Open "
                f"{endpoint}/{name}, log in, accept the licence on the model page, then run with a token of that "
                f"same account (this run used {who}; set one with --hf_token, the HF_TOKEN environment variable or "
                f"`hf auth login`)."
            ) from None
        except RevisionNotFoundError:
            raise ModelSourceError(
                f"{field}={name!r} has no revision {revision!r} on {endpoint}: give a branch, tag "
                f"or commit of that repo."
            ) from None
        except RepositoryNotFoundError:
            raise ModelSourceError(
                f"{field}={name!r}: there is no folder {path.absolute()} and no model {endpoint}/{name} that {who} "
                f"can see. Fix the path or the Hub id; for a private model use a token of an account with access."
            ) from None
        except EntryNotFoundError:
            raise ModelSourceError(
                f"{field}={name!r}: {endpoint}/{name} has no {file}, so it is not a model in the Hugging Face format "
                f"this field needs{' (check model.cosmos_subfolder too)' if subfolder else ''}."
            ) from None
        except Exception as err:
            if http_status(err) == 401:
                raise explain(err, name, token, endpoint) from None
            reason = f"the Hub at {endpoint} {answer_of(err)} ({describe_error(err)})"
    cached = try_to_load_from_cache(name, file, revision=revision)
    if isinstance(cached, str):
        commit = Path(cached).parents[len(Path(file).parts) - 1].name
        log.info("%s=%s: %s; using the local cache (commit %s)", field, name, reason, commit[:8])
        return name, commit if _COMMIT.fullmatch(commit) else None
    raise ModelSourceError(
        f"{field}={name!r} is not in the local Hugging Face cache and cannot be downloaded: "
        f"{reason}. Connect to the Hub once, or copy the model into a folder and give its path."
    )


def _refuse_missing_folder(name: str, field: str) -> None:
    """A name that can only be a path (./x, /x, a/b/c, or under a folder that exists here) names a missing folder."""
    path = Path(name).expanduser()
    try:
        hf_validate_repo_id(name)
        is_path = path.parent != Path(".") and path.parent.is_dir()
    except HFValidationError:
        is_path = True
    if not is_path:
        return
    siblings = sorted(p.name for p in path.parent.iterdir() if p.is_dir()) if path.parent.is_dir() else []
    hint = f" {path.parent}/ holds {', '.join(siblings)}." if siblings else ""
    raise ModelSourceError(
        f"{field}={name!r}: there is no folder {path.absolute()}.{hint} Fix the path (a relative path starts from the "
        f"directory theworld runs in, {Path.cwd()}) or give a Hub model id such as `google/gemma-3-4b-it`."
    )


def pin_bases(config, token: HubToken | str | None = None):
    """``config`` (a TheWorldConfig) with both bases pinned: absolute folders, or Hub ids at an exact commit."""
    gemma, gemma_revision = pin_base(config.gemma_model_name, "model.gemma_model_name", config.gemma_revision, token)
    changes = {"gemma_model_name": gemma, "gemma_revision": gemma_revision}
    if config.enable_world:
        cosmos, cosmos_revision = pin_base(
            config.cosmos_model_name,
            "model.cosmos_model_name",
            config.cosmos_revision,
            token,
            subfolder=config.cosmos_subfolder,
        )
        changes.update(cosmos_model_name=cosmos, cosmos_revision=cosmos_revision)
    return dataclasses.replace(config, **changes)
