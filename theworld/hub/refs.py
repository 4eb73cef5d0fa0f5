"""Hub repo ids and ``hf://user/repo[@revision][/folder]`` references."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id as hf_validate_repo_id

from theworld.hub.errors import HubError

HF_PREFIX = "hf://"


def is_hub_repo_id(name: str) -> bool:
    """``user/repo`` that is not meant as a path (``./x``, ``a/b/c``, or under a folder that exists here)."""
    parent = Path(name).parent
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not parent.is_dir()


def validate_repo_id(repo_id: str | None, field_name: str = "hub.hub_model_id") -> str:
    """Returns ``repo_id`` if it is ``username/repo-name``; raises a HubError saying how to fix it otherwise."""
    example = "e.g. `alice/theworld-datacomp`"
    if not repo_id:
        raise HubError(f"{field_name} is not set. Set it to `username/repo-name` ({example}) to push to the Hub.")
    reason = "" if repo_id.count("/") == 1 else "It needs exactly one '/' between the user (or org) and the name."
    if not reason:
        try:
            hf_validate_repo_id(repo_id)
        except HFValidationError as err:
            reason = str(err)
    if reason:
        raise HubError(
            f"{field_name}={repo_id!r} is not a valid Hub repository id: it must be `username/repo-name` ({example}), "
            f"your Hub user or organisation name, a slash, then letters, digits, '-', '_' or '.'. {reason}"
        )
    return repo_id


_HF_REF = re.compile(r"hf://(?P<repo>[^/@]+/[^/@]+)(?:@(?P<rev>[^/]+))?(?:/(?P<sub>.*?))?/?")


def parse_hf_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``hf://user/repo[@revision][/sub/folder]`` -> (repo_id, revision, subfolder).

    A revision with a slash is written URL-encoded (``@refs%2Fpr%2F1``).

    Example:
        >>> parse_hf_ref("hf://alice/theworld@v1.0/checkpoint-500")
        ('alice/theworld', 'v1.0', 'checkpoint-500')
    """
    match = _HF_REF.fullmatch(ref.strip())
    if not match:
        raise HubError(f"{ref!r} is not a Hub reference: write hf://username/repo-name[@revision][/subfolder].")
    repo_id = validate_repo_id(match["repo"], field_name=ref)
    return repo_id, unquote(match["rev"]) if match["rev"] else None, match["sub"] or None


def is_hf_ref(value) -> bool:
    return isinstance(value, str) and value.startswith(HF_PREFIX)


# ----------------------------------------------------------------------------- errors and retries
