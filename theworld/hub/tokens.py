"""The Hugging Face token: where it comes from, and keeping it out of everything the run writes.

The token crosses the code as one :class:`HubToken` (its ``repr`` names the source only). Every config that is
printed, saved or uploaded goes through :func:`redact` first, and so does every error text that may quote what the
user typed (``redact("unrecognized arguments: --hf-token hf_Ab12...")`` masks the token).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from huggingface_hub import get_token
from jsonargparse import Namespace

# Config keys whose values are credentials (hf_token, api_key, ...; not max_new_tokens).
_SECRET_KEY = re.compile(r"(^|_)(token|secret|password|api_?key)$", re.IGNORECASE)
# A Hub token in free text: hf_ and 8+ letters, digits or underscores with a capital or a digit among them (a token
# is random; names such as hf_hub_download are not).
_TOKEN_TEXT = re.compile(r"\bhf_(?=\w*[A-Z0-9])\w{8,}")
TOKEN_MASK = "hf_***"


@dataclass(frozen=True)
class HubToken:
    """A token and where it came from. ``repr`` shows the source only, so it is safe to log."""

    value: str = field(repr=False)
    source: str


def resolve_token(
    cli_token: str | None = None, config_token: str | None = None, config_source: str = "hub.hf_token"
) -> HubToken | None:
    """The token to use, highest first: ``--hf_token``, ``hub.hf_token`` (``config_source`` names where a config
    set it), ``$HF_TOKEN``, ``hf auth login``."""
    for value, source in (
        (cli_token, "--hf_token"),
        (config_token, config_source),
        (os.environ.get("HF_TOKEN"), "the HF_TOKEN environment variable"),
    ):
        if value and value.strip():
            return HubToken(value.strip(), source)
    cached = get_token()  # the `hf auth login` file (and huggingface_hub's other machine-level sources)
    return HubToken(cached, "the token saved by `hf auth login`") if cached else None


def is_secret_key(name) -> bool:
    return bool(_SECRET_KEY.search(str(name)))


def redact(value):
    """A copy of a (nested) config, a Namespace or dict, with every token/secret-like value set to None; in a
    string, every Hub token masked as ``hf_***``."""
    if isinstance(value, Namespace):
        clone = value.clone()
        for key, item in vars(value).items():
            setattr(clone, key, None if is_secret_key(key) else redact(item))
        return clone
    if isinstance(value, dict):
        return {key: None if is_secret_key(key) else redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return _TOKEN_TEXT.sub(TOKEN_MASK, value)
    return value
