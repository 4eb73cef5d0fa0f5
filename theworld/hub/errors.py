"""Hub failures in words: what went wrong and how to fix it."""

from __future__ import annotations

from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

from theworld.errors import UserError
from theworld.hub.tokens import HubToken
from theworld.retry import answer_of, describe_error, http_status, is_transient


class HubError(UserError):
    """A Hub problem the user can fix; the message names the setting and the fix."""


class HubUnreachableError(HubError):
    """The Hub did not answer (connection refused, timeouts) or failed (5xx, 429) after a few tries: worth trying
    again later."""

    transient = True


def settings_url(endpoint: str) -> str:
    """Where a user makes a new token."""
    return f"{endpoint}/settings/tokens"


def explain(err: BaseException, repo_id: str, token: HubToken | None, endpoint: str) -> HubError:
    """Turns a huggingface_hub error into one paragraph that says what is wrong and how to fix it."""
    source = token.source if token else "nowhere (no token was found)"
    where = f"{endpoint}/{repo_id}"
    status = http_status(err)
    if isinstance(err, GatedRepoError):
        return HubError(
            f"{where} is gated: accept its conditions on its page with the account of your token "
            f"(from {source}), then retry."
        )
    if isinstance(err, RevisionNotFoundError):
        return HubError(f"{where} has no such revision: check the @revision (a branch, tag or commit).")
    if isinstance(err, RepositoryNotFoundError) or (status == 404 and not isinstance(err, EntryNotFoundError)):
        return HubError(
            f"Repository not found: {where}. Check that the id is `username/repo-name` and exists, and, for a "
            f"private repo, that your token (from {source}) belongs to an account that can see it."
        )
    if status == 401:
        return HubError(
            f"Authentication failed: the Hugging Face token from {source} is invalid or expired (HTTP 401 from "
            f"{endpoint}). Create a new token with write access at {settings_url(endpoint)} and pass it with "
            f"--hf_token, hub.hf_token, the HF_TOKEN environment variable or `hf auth login`."
        )
    if status == 403:
        return HubError(
            f"Permission denied on {where}: the token from {source} cannot write there (HTTP 403). Use a token with "
            f"write permission for that namespace ({settings_url(endpoint)}), or set hub.hub_model_id to a "
            f"repo under your own username."
        )
    if is_transient(err):
        return HubUnreachableError(f"The Hub at {endpoint} {answer_of(err)} for {repo_id} ({describe_error(err)}).")
    return HubError(f"Hub request for {where} failed: {describe_error(err)}")
