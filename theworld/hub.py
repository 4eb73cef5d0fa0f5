"""Hugging Face Hub plumbing: the ``hub:`` config group, tokens, ``hf://`` references, preflight, downloads.

Nothing here runs in the training step: the background upload lives in
:mod:`theworld.callbacks.hub_sync`. ``HF_ENDPOINT`` (a private Hub) is honoured through
huggingface_hub; functions also take ``endpoint=`` explicitly.

Example::

    token = resolve_token(cli_token=None, config_token=None)   # HF_TOKEN or `hf auth login`
    api = preflight(HubConfig(push_to_hub=True, hub_model_id="alice/theworld"), token)
    checkpoint = download_resume_checkpoint("hf://alice/theworld@main", token)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, TypeVar
from urllib.parse import unquote

from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    get_token,
    hf_hub_download,
    hf_hub_url,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id as hf_validate_repo_id

from theworld.checkpoint import TRAINING_STATE_NAME, WEIGHTS_NAME
from theworld.config import CONFIG_NAME
from theworld.errors import UserError

log = logging.getLogger(__name__)

HubStrategy = Literal["every_save", "checkpoint", "all_checkpoints", "end"]
HF_PREFIX = "hf://"
LAST_CHECKPOINT = "last-checkpoint"
RESUME_FILES = (WEIGHTS_NAME, CONFIG_NAME, TRAINING_STATE_NAME)
# What download_files fetches: tensors and JSON only, never a pickle.
_SAFE_SUFFIXES = (".safetensors", ".json")
# Config keys whose values are credentials (hf_token, api_key, ...; not max_new_tokens): removed from
# every file the run writes.
_SECRET_KEY = re.compile(r"(^|_)(token|secret|password|api_?key)$", re.IGNORECASE)

T = TypeVar("T")


@dataclass
class HubConfig:
    """The ``hub:`` config group (``--hub.<name>`` on the command line).

    Attributes:
        push_to_hub: Push checkpoints to a Hub repo in the background while training.
        hub_model_id: The repo to push to: your-username/repo-name (created if missing).
        hub_strategy: What each push holds: every_save (latest weights), checkpoint (+ last-checkpoint/ to resume
            from), all_checkpoints (+ every checkpoint-N/, pruned as locally), end (only the final weights).
        hub_private_repo: Create the repo private (a public repo of that name is refused).
        hf_token: A token with write access; prefer the HF_TOKEN environment variable or `hf auth login`.
        hub_tag: Tag the final commit with this name (it must not exist yet).
        hub_final_push_timeout: Seconds the end of training (or an interrupted run) waits for its last push; past
            it the run fails, and the local checkpoint stays.

    Example (YAML)::

        hub:
          push_to_hub: true
          hub_model_id: your-username/theworld-datacomp
          hub_strategy: every_save     # every_save | checkpoint | all_checkpoints | end
          hub_private_repo: false
          hub_tag: v1.0-final          # optional: tag on the final commit
    """

    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_strategy: HubStrategy = "every_save"
    hub_private_repo: bool = False
    hf_token: str | None = None
    hub_tag: str | None = None
    hub_final_push_timeout: float = 3600.0


class HubError(UserError):
    """A Hub problem the user can fix; the message names the setting and the fix."""


class HubUnreachableError(HubError):
    """The Hub did not answer (connection refused, timeouts, 5xx) after a few tries."""


@dataclass(frozen=True)
class HubToken:
    """A token and where it came from. ``repr`` shows the source only, so it is safe to log."""

    value: str = field(repr=False)
    source: str


def resolve_token(cli_token: str | None = None, config_token: str | None = None) -> HubToken | None:
    """The token to use, highest first: ``--hf_token``, ``hub.hf_token``, ``$HF_TOKEN``, ``hf auth login``."""
    for value, source in (
        (cli_token, "--hf_token"),
        (config_token, "hub.hf_token"),
        (os.environ.get("HF_TOKEN"), "the HF_TOKEN environment variable"),
    ):
        if value and value.strip():
            return HubToken(value.strip(), source)
    cached = get_token()  # the `hf auth login` file (and huggingface_hub's other machine-level sources)
    return HubToken(cached, "the token saved by `hf auth login`") if cached else None


def is_secret_key(name) -> bool:
    return bool(_SECRET_KEY.search(str(name)))


def redact_secrets(value):
    """A copy of a (nested) config with every token/secret-like key removed, for files and loggers."""
    if isinstance(value, dict):
        return {k: redact_secrets(v) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(v) for v in value]
    return value


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
def http_status(err: BaseException) -> int | None:
    """The HTTP status behind ``err`` (also when huggingface_hub wrapped it in another exception)."""
    while err is not None:
        if isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
            return err.response.status_code
        err = err.__cause__ or err.__context__
    return None


def is_transient(err: BaseException) -> bool:
    """5xx, 408/429, a stale parent commit (412) and network failures are worth retrying; other errors are not."""
    if isinstance(err, HubUnreachableError):
        return True
    status = http_status(err)
    if status is not None:
        return status >= 500 or status in (408, 412, 429)
    # Our own verdicts and local bugs/IO problems will fail the same way again.
    return not isinstance(err, (HubError, ValueError, TypeError, KeyError, AttributeError, FileNotFoundError))


def describe_error(err: BaseException) -> str:
    """One line for logs: the exception type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def with_retries(fn: Callable[[], T], *, what: str, retries: int, wait_s: float, max_wait_s: float = 60.0,
                 sleep: Callable[[float], bool | None] = time.sleep) -> T:
    """Calls ``fn``, retrying transient errors with exponential backoff.

    ``sleep(delay)`` returning True means "give up now" (the uploader's stop/supersede signal).
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_transient(err) or attempt >= retries:
                raise
            delay = min(max_wait_s, wait_s * 2**attempt)
            attempt += 1
            log.warning("%s failed (%s); retry %d/%d in %.1f s", what, describe_error(err), attempt, retries, delay)
            if sleep(delay):
                raise


def _settings_url(endpoint: str) -> str:
    return f"{endpoint}/settings/tokens"


def explain(err: BaseException, repo_id: str, token: HubToken | None, endpoint: str) -> HubError:
    """Turns a huggingface_hub error into one paragraph that says what is wrong and how to fix it."""
    source = token.source if token else "nowhere (no token was found)"
    where = f"{endpoint}/{repo_id}"
    status = http_status(err)
    if isinstance(err, GatedRepoError):
        return HubError(f"{where} is gated: accept its conditions on its page with the account of your token "
                        f"(from {source}), then retry.")
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
            f"{endpoint}). Create a new token with write access at {_settings_url(endpoint)} and pass it with "
            f"--hf_token, hub.hf_token, the HF_TOKEN environment variable or `hf auth login`."
        )
    if status == 403:
        return HubError(
            f"Permission denied on {where}: the token from {source} cannot write there (HTTP 403). Use a token with "
            f"write permission for that namespace ({_settings_url(endpoint)}), or set hub.hub_model_id to a "
            f"repo under your own username."
        )
    if is_transient(err):
        return HubUnreachableError(f"The Hub at {endpoint} did not answer for {repo_id} ({describe_error(err)}).")
    return HubError(f"Hub request for {where} failed: {describe_error(err)}")


# ---------------------------------------------------------------------------------------- preflight
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
    fix = f"Create a token with write permission at {_settings_url(endpoint)}."
    if role == "read":
        raise HubError(f"The token from {token.source} is read-only, so it cannot push to {repo_id}. {fix}")
    # Fine-grained tokens list permissions per user/org/repo. Only a clear "no" stops the run here; anything
    # else is left to the first commit, which would answer 403.
    scoped = (access.get("fineGrained") or {}).get("scoped") or []
    relevant = [s for s in scoped if (s.get("entity") or {}).get("name") in (namespace, repo_id)]
    if role == "fineGrained" and relevant and not any("repo.write" in s.get("permissions", []) for s in relevant):
        raise HubError(f"The fine-grained token from {token.source} has no `repo.write` permission for "
                       f"{namespace!r}, so it cannot push to {repo_id}. {fix}")


def preflight(config: HubConfig, token: HubToken | None, endpoint: str | None = None, retries: int = 2,
              wait_s: float = 1.0, resuming: bool = False) -> HfApi:
    """Checks that pushes will work: token valid (whoami), repo created (private as configured), writable, and
    ``hub_tag`` free (a resumed run may find its own tag there already).

    Raises HubError (bad token, malformed id, no write access, a public repo when private was asked) or
    HubUnreachableError (the Hub did not answer: the caller may go on and retry later).
    """
    repo_id = validate_repo_id(config.hub_model_id)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    if token is None:
        raise HubError(
            "hub.push_to_hub is true but no Hugging Face token was found. Create one with write permission at "
            f"{_settings_url(endpoint)} and pass it with --hf_token, hub.hf_token, the HF_TOKEN environment "
            "variable, or run `hf auth login`."
        )
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
    if config.hub_tag:
        tags = {ref.name: ref.target_commit for ref in call(lambda: api.list_repo_refs(repo_id), "Hub refs").tags}
        if config.hub_tag in tags and not resuming:
            raise HubError(
                f"hub.hub_tag={config.hub_tag!r} already exists on {endpoint}/{repo_id} (commit "
                f"{tags[config.hub_tag][:8]}), so this run could not tag its final commit. Choose another tag, or "
                f"delete that one first (`hf repos tag delete {repo_id} {config.hub_tag}`)."
            )
        if config.hub_tag in tags:
            log.warning("hub.hub_tag=%r already exists on %s (commit %s); it stays where it is unless this run's final "
                        "commit is that one.", config.hub_tag, repo_id, tags[config.hub_tag][:8])
    log.info("Hub preflight ok: %s can push to %s/%s (token from %s)", me.get("name"), endpoint, repo_id,
             token.source)
    return api


# -------------------------------------------------------------------------------------- base models
class ModelSourceError(UserError):
    """A base model (``model.gemma_model_name`` / ``model.cosmos_model_name``) that ``from_pretrained`` cannot load."""


_COMMIT = re.compile(r"[0-9a-f]{40}")


def pin_base(name: str, field: str, revision: str | None = None, token: HubToken | str | None = None,
             subfolder: str | None = None, endpoint: str | None = None) -> tuple[str, str | None]:
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
            raise ModelSourceError(f"{field}={name!r} has no revision {revision!r} on {endpoint}: give a branch, tag "
                                   f"or commit of that repo.") from None
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
            reason = f"the Hub at {endpoint} did not answer ({describe_error(err)})"
    cached = try_to_load_from_cache(name, file, revision=revision)
    if isinstance(cached, str):
        commit = Path(cached).parents[len(Path(file).parts) - 1].name
        log.info("%s=%s: %s; using the local cache (commit %s)", field, name, reason, commit[:8])
        return name, commit if _COMMIT.fullmatch(commit) else None
    raise ModelSourceError(f"{field}={name!r} is not in the local Hugging Face cache and cannot be downloaded: "
                           f"{reason}. Connect to the Hub once, or copy the model into a folder and give its path.")


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
        cosmos, cosmos_revision = pin_base(config.cosmos_model_name, "model.cosmos_model_name", config.cosmos_revision,
                                           token, subfolder=config.cosmos_subfolder)
        changes.update(cosmos_model_name=cosmos, cosmos_revision=cosmos_revision)
    return dataclasses.replace(config, **changes)


# ---------------------------------------------------------------------------------------- downloads
def download_files(path_or_repo: str, filenames: list[str], revision: str | None = None, token: str | None = None,
                   subfolder: str | None = None, endpoint: str | None = None) -> dict[str, Path]:
    """Downloads ``filenames`` (safetensors/JSON only) from ``user/repo`` or ``hf://user/repo[@rev][/sub]``.

    All files come from one commit. Returns {filename: local path in the Hugging Face cache}.

    Example:
        >>> download_files("hf://alice/theworld/final", ["model.safetensors", "config.json"])
        {'model.safetensors': PosixPath('.../final/model.safetensors'), 'config.json': ...}
    """
    unsafe = [name for name in filenames if not name.endswith(_SAFE_SUFFIXES)]
    if unsafe:
        raise ValueError(f"download_files fetches tensors and JSON only ({_SAFE_SUFFIXES}), not {unsafe}.")
    if is_hf_ref(path_or_repo):
        repo_id, ref_revision, ref_subfolder = parse_hf_ref(path_or_repo)
        revision = revision or ref_revision
        subfolder = "/".join(p for p in (ref_subfolder, subfolder) if p) or None
    elif path_or_repo.count("/") == 1 and not Path(path_or_repo).exists():
        repo_id = validate_repo_id(path_or_repo, field_name=path_or_repo)
    else:
        raise FileNotFoundError(
            f"{path_or_repo!r} is neither a local checkpoint folder nor a Hub repo (`user/repo` or "
            f"hf://user/repo[@revision][/subfolder])."
        )
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    try:
        if not constants.HF_HUB_OFFLINE:  # one commit for all files, even while a training run pushes
            revision = HfApi(endpoint=endpoint, token=token).repo_info(repo_id, revision=revision).sha
        return {
            name: Path(hf_hub_download(repo_id, name, subfolder=subfolder, revision=revision, token=token,
                                       endpoint=endpoint))
            for name in filenames
        }
    except EntryNotFoundError as err:
        where = f"{repo_id}/{subfolder}" if subfolder else repo_id
        raise FileNotFoundError(f"{endpoint}/{where} lacks one of {filenames}: is it a TheWorld checkpoint "
                                f"(model.safetensors + config.json)? Check the subfolder and revision.") from err
    except HubError:
        raise
    except Exception as err:
        missing = isinstance(err, RepositoryNotFoundError) and not isinstance(err, GatedRepoError)
        if missing and not is_hf_ref(path_or_repo):  # it may have been meant as a local folder
            raise FileNotFoundError(f"{path_or_repo!r} is neither a local folder nor a Hub repo you can access "
                                    f"on {endpoint}.") from err
        raise explain(err, repo_id, HubToken(token, "the token argument") if token else resolve_token(),
                      endpoint) from err


@dataclass(frozen=True)
class HubCheckpoint:
    """A checkpoint downloaded from the Hub for ``--ckpt_path hf://...``.

    ``resumable``: ``path`` holds training_state.pt too, so Lightning resumes exactly. Otherwise it holds
    only root weights + config: the CLI turns it into a warm start (``model.init_from``).
    """

    path: Path
    resumable: bool
    ref: str


def download_resume_checkpoint(ref: str, token: HubToken | None, endpoint: str | None = None) -> HubCheckpoint:
    """Downloads the resumable state behind ``hf://user/repo[@rev][/folder]`` (never the base models).

    Looks for ``training_state.pt`` + weights + config in ``folder`` itself (e.g. ``/checkpoint-500``), then in
    ``folder/last-checkpoint/``; with neither, falls back to the root ``model.safetensors`` + ``config.json``.
    """
    repo_id, revision, subfolder = parse_hf_ref(ref)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    value = token.value if token else None
    base = f"{subfolder}/" if subfolder else ""
    try:
        info = HfApi(endpoint=endpoint, token=value).repo_info(repo_id, revision=revision)
        files = {s.rfilename for s in info.siblings or []}
        for folder in (subfolder, f"{base}{LAST_CHECKPOINT}"):
            prefix = f"{folder}/" if folder else ""
            if all(f"{prefix}{name}" in files for name in RESUME_FILES):
                paths = [hf_hub_download(repo_id, name, subfolder=folder, revision=info.sha, token=value,
                                         endpoint=endpoint) for name in RESUME_FILES]
                log.info("Resuming from %s (commit %s, folder %s/)", ref, info.sha[:8], folder or ".")
                return HubCheckpoint(Path(paths[0]).parent, resumable=True, ref=ref)
        if all(f"{base}{name}" in files for name in (WEIGHTS_NAME, CONFIG_NAME)):
            paths = [hf_hub_download(repo_id, name, subfolder=subfolder, revision=info.sha, token=value,
                                     endpoint=endpoint) for name in (WEIGHTS_NAME, CONFIG_NAME)]
            return HubCheckpoint(Path(paths[0]).parent, resumable=False, ref=ref)
    except Exception as err:
        raise explain(err, repo_id, token, endpoint) from err
    raise HubError(
        f"{ref} holds no TheWorld checkpoint: neither {base}{LAST_CHECKPOINT}/ (training_state.pt, model.safetensors, "
        f"config.json) nor {base}model.safetensors + config.json. Check the repo id, @revision and subfolder."
    )
