"""Downloads for loading and resuming: trainable weights, config, training state and provenance, never a base model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from huggingface_hub import HfApi, ModelInfo, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

from theworld.config import CONFIG_NAME
from theworld.hub.errors import HubError, explain
from theworld.hub.refs import is_hf_ref, parse_hf_ref, validate_repo_id
from theworld.hub.tokens import HubToken, resolve_token
from theworld.layout import LAST_CHECKPOINT, PROVENANCE_DIR, PROVENANCE_NAME, RESUME_FILES, WEIGHTS_NAME
from theworld.provenance import History

log = logging.getLogger(__name__)

# What download_files fetches: tensors and JSON only, never a pickle.
_SAFE_SUFFIXES = (".safetensors", ".json")


def download_files(
    path_or_repo: str,
    filenames: list[str],
    revision: str | None = None,
    token: str | None = None,
    subfolder: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Path]:
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
            name: Path(
                hf_hub_download(repo_id, name, subfolder=subfolder, revision=revision, token=token, endpoint=endpoint)
            )
            for name in filenames
        }
    except EntryNotFoundError as err:
        where = f"{repo_id}/{subfolder}" if subfolder else repo_id
        raise FileNotFoundError(
            f"{endpoint}/{where} lacks one of {filenames}: is it a TheWorld checkpoint "
            f"(model.safetensors + config.json)? Check the subfolder and revision."
        ) from err
    except HubError:
        raise
    except Exception as err:
        missing = isinstance(err, RepositoryNotFoundError) and not isinstance(err, GatedRepoError)
        if missing and not is_hf_ref(path_or_repo):  # it may have been meant as a local folder
            raise FileNotFoundError(
                f"{path_or_repo!r} is neither a local folder nor a Hub repo you can access on {endpoint}."
            ) from err
        raise explain(
            err, repo_id, HubToken(token, "the token argument") if token else resolve_token(), endpoint
        ) from err


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
        # A model repo (repo_info's default repo_type), whatever union repo_info is annotated with
        info = cast(ModelInfo, HfApi(endpoint=endpoint, token=value).repo_info(repo_id, revision=revision))
        assert info.sha is not None  # the Hub always names the head commit
        files = {s.rfilename for s in info.siblings or []}

        def fetch(path: str) -> str:
            return hf_hub_download(repo_id, path, revision=info.sha, token=value, endpoint=endpoint)

        for folder in (subfolder, f"{base}{LAST_CHECKPOINT}"):
            prefix = f"{folder}/" if folder else ""
            if all(f"{prefix}{name}" in files for name in RESUME_FILES):
                paths = [
                    hf_hub_download(repo_id, name, subfolder=folder, revision=info.sha, token=value, endpoint=endpoint)
                    for name in RESUME_FILES
                ]
                _download_provenance(files, folder, fetch)
                log.info("Resuming from %s (commit %s, folder %s/)", ref, info.sha[:8], folder or ".")
                return HubCheckpoint(Path(paths[0]).parent, resumable=True, ref=ref)
        if all(f"{base}{name}" in files for name in (WEIGHTS_NAME, CONFIG_NAME)):
            paths = [
                hf_hub_download(repo_id, name, subfolder=subfolder, revision=info.sha, token=value, endpoint=endpoint)
                for name in (WEIGHTS_NAME, CONFIG_NAME)
            ]
            _download_provenance(files, subfolder, fetch)
            return HubCheckpoint(Path(paths[0]).parent, resumable=False, ref=ref)
    except Exception as err:
        raise explain(err, repo_id, token, endpoint) from err
    raise HubError(
        f"{ref} holds no TheWorld checkpoint: neither {base}{LAST_CHECKPOINT}/ (training_state.pt, model.safetensors, "
        f"config.json) nor {base}model.safetensors + config.json. Check the repo id, @revision and subfolder."
    )


def download_provenance(ref: str, token: str | None = None, endpoint: str | None = None) -> str:
    """Downloads the provenance of ``hf://user/repo[@rev][/folder]`` into the Hugging Face cache, where
    ``theworld.provenance`` reads it beside the folder's weights; returns the commit it came from (download the
    weights from the same one). A folder without provenance downloads nothing.

    Example:
        >>> revision = download_provenance("hf://alice/theworld/final")
        >>> download_files("hf://alice/theworld/final", ["model.safetensors"], revision=revision)
    """
    repo_id, revision, subfolder = parse_hf_ref(ref)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    try:
        # A model repo (repo_info's default repo_type), whatever union repo_info is annotated with
        info = cast(ModelInfo, HfApi(endpoint=endpoint, token=token).repo_info(repo_id, revision=revision))
        assert info.sha is not None  # the Hub always names the head commit
        _download_provenance(
            {s.rfilename for s in info.siblings or []},
            subfolder,
            lambda path: hf_hub_download(repo_id, path, revision=info.sha, token=token, endpoint=endpoint),
        )
    except Exception as err:
        raise explain(
            err, repo_id, HubToken(token, "the token argument") if token else resolve_token(), endpoint
        ) from err
    return info.sha


def _download_provenance(files: set[str], folder: str | None, download: Callable[[str], str]) -> None:
    """Downloads ``folder``'s provenance.json (if the repo ``files`` hold one) and the deltas it names, to disk
    only: the history's rows are never read into memory here."""
    prefix = f"{folder}/" if folder else ""
    if f"{prefix}{PROVENANCE_NAME}" not in files:
        return
    history = History.from_json(Path(download(f"{prefix}{PROVENANCE_NAME}")).read_text())
    own = f"{prefix}{PROVENANCE_DIR}/"  # the rule of theworld.provenance.delta_folder, on the repo's paths
    parent = folder.rpartition("/")[0] if folder else ""
    where = own if any(f.startswith(own) for f in files) else f"{parent}/{PROVENANCE_DIR}/".lstrip("/")
    missing = [delta.name for delta in history.deltas if where + delta.name not in files]
    if missing:
        log.warning(
            "%s%s names %d provenance files that the repo lacks (%s...): the history carried on lacks their rows.",
            prefix,
            PROVENANCE_NAME,
            len(missing),
            missing[0],
        )
    for delta in history.deltas:
        if delta.name not in missing:
            download(where + delta.name)
