"""Before any weight loads: will pushes to the Hub work?"""

from __future__ import annotations

import logging

from huggingface_hub import HfApi, constants

from theworld.hub.config import HubConfig
from theworld.hub.errors import HubError, HubUnreachableError, explain, settings_url
from theworld.hub.refs import validate_repo_id
from theworld.hub.session import bound_hub_requests
from theworld.hub.tokens import HubToken
from theworld.retry import with_retries

log = logging.getLogger(__name__)


def _check_write_access(me: dict, repo_id: str, token: HubToken, endpoint: str) -> None:
    """Refuses read-only tokens and namespaces the token's user cannot write to, before any upload."""
    namespace = repo_id.split("/")[0]
    user = me.get("name")
    orgs = {org.get("name") for org in me.get("orgs") or []}
    if namespace != user and namespace not in orgs:
        raise HubError(
            f"hub.hub_model_id={repo_id!r}: the token from {token.source} belongs to {user!r}, who cannot write to "
            f"the {namespace!r} namespace. Use `{user}/{repo_id.split('/')[1]}`, or a token of an account that is a "
            f"member of {namespace!r} with write access."
        )
    access = (me.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    fix = f"Create a token with write permission at {settings_url(endpoint)}."
    if role == "read":
        raise HubError(f"The token from {token.source} is read-only, so it cannot push to {repo_id}. {fix}")
    # Fine-grained tokens list permissions per user/org/repo. Only a clear "no" stops the run here; anything
    # else is left to the first commit, which would answer 403.
    scoped = (access.get("fineGrained") or {}).get("scoped") or []
    relevant = [s for s in scoped if (s.get("entity") or {}).get("name") in (namespace, repo_id)]
    if role == "fineGrained" and relevant and not any("repo.write" in s.get("permissions", []) for s in relevant):
        raise HubError(
            f"The fine-grained token from {token.source} has no `repo.write` permission for "
            f"{namespace!r}, so it cannot push to {repo_id}. {fix}"
        )


def preflight(
    config: HubConfig,
    token: HubToken | None,
    endpoint: str | None = None,
    retries: int = 2,
    wait_s: float = 1.0,
    resuming: bool = False,
) -> HfApi:
    """Checks that pushes will work: token valid (whoami), repo created (private as configured), writable, the
    ``hub_revision`` branch there (created from main), and ``hub_tag`` free (a resumed run may find its own tag
    there already).

    Raises HubError (bad token, malformed id, no write access, a public repo when private was asked) or
    HubUnreachableError (the Hub did not answer: the caller may go on and retry later).
    """
    repo_id = validate_repo_id(config.hub_model_id)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    if token is None:
        raise HubError(
            "hub.push_to_hub is true but no Hugging Face token was found. Create one with write permission at "
            f"{settings_url(endpoint)} and pass it with --hf_token, hub.hf_token, the HF_TOKEN environment "
            "variable, or run `hf auth login`."
        )
    bound_hub_requests(config.hub_request_timeout)
    api = HfApi(endpoint=endpoint, token=token.value)

    def call(fn, what):
        try:
            return with_retries(fn, what=what, retries=retries, wait_s=wait_s)
        except Exception as err:
            raise explain(err, repo_id, token, endpoint) from err

    me = call(api.whoami, "Hub whoami")
    _check_write_access(me, repo_id, token, endpoint)
    call(lambda: api.create_repo(repo_id, private=config.hub_private_repo, exist_ok=True), "Hub create_repo")
    info = call(lambda: api.repo_info(repo_id), "Hub repo_info")
    if config.hub_private_repo and not info.private:
        raise HubError(
            f"hub.hub_private_repo is true but {endpoint}/{repo_id} already exists and is public: its checkpoints "
            f"would be public. Make the repo private in its settings, or choose another hub.hub_model_id."
        )
    if config.hub_revision:
        call(lambda: api.create_branch(repo_id, branch=config.hub_revision, exist_ok=True), "Hub create_branch")
    if config.hub_tag:
        tags = {ref.name: ref.target_commit for ref in call(lambda: api.list_repo_refs(repo_id), "Hub refs").tags}
        if config.hub_tag in tags and not resuming:
            raise HubError(
                f"hub.hub_tag={config.hub_tag!r} already exists on {endpoint}/{repo_id} (commit "
                f"{tags[config.hub_tag][:8]}), so this run could not tag its final commit. Choose another tag, or "
                f"delete that one first (`hf repos tag delete {repo_id} {config.hub_tag}`)."
            )
        if config.hub_tag in tags:
            log.warning(
                "hub.hub_tag=%r already exists on %s (commit %s); it stays where it is unless this run's final "
                "commit is that one.",
                config.hub_tag,
                repo_id,
                tags[config.hub_tag][:8],
            )
    log.info(
        "Hub preflight ok: %s can push to %s/%s%s (token from %s)",
        me.get("name"),
        endpoint,
        repo_id,
        f" on branch {config.hub_revision}" if config.hub_revision else "",
        token.source,
    )
    return api


def check_dataset(dataset_name: str, token: HubToken | None, endpoint: str | None = None) -> None:
    """The Hub dataset a run streams exists and the token can read it, asked once before any weight loads (its
    rows are read by every loader worker, where a refusal would come late and as a worker's traceback).

    Offline (``HF_HUB_OFFLINE``) or with the Hub not answering, the check is left to ``datasets`` (it may have the
    dataset cached, and retries its own reads).
    """
    if constants.HF_HUB_OFFLINE:
        return
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    try:
        HfApi(endpoint=endpoint, token=token.value if token else None).dataset_info(dataset_name)
    except Exception as err:
        problem = explain(err, f"datasets/{dataset_name}", token, endpoint)
        if isinstance(problem, HubUnreachableError):
            log.warning("%s data.dataset_name is read when training starts.", problem)
            return
        raise HubError(f"data.dataset_name={dataset_name!r}: {problem}") from None
