"""Trainable-only checkpoint folders: ``model.safetensors`` + ``config.json`` (+ training state).

A folder is written under a temporary name and renamed into place, so a crash mid-save never
leaves a half-written checkpoint under a name that loading or resuming would pick.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import json
import logging
import os
import pickle
import re
import shutil
import struct
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from theworld import lightning_private
from theworld.config import CONFIG_NAME, TheWorldConfig
from theworld.errors import UserError
from theworld.hub.downloads import download_files
from theworld.layout import TMP_MARKER, TRAINING_STATE_NAME, WEIGHTS_NAME

log = logging.getLogger(__name__)


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (read once, at import: os.umask can only
    be read by setting it, which would race with threads creating files)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _new_file_mode()


class CheckpointMismatch(UserError, ValueError):
    """Trainable weights that do not fit the model they are loaded into."""


class UnsafeCheckpointError(UserError):
    """A training state that is not plain tensors and containers: unpickling it could run code."""


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yields a temporary sibling folder; on success it replaces ``final`` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}{TMP_MARKER}{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        for path in tmp.iterdir():  # make the bytes durable before the name points at them
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.exists():
            trash = final.with_name(f"{final.name}{TMP_MARKER}old-{uuid.uuid4().hex[:8]}")
            final.rename(trash)
            shutil.rmtree(trash)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class CheckpointWriteFailed(UserError):
    """A checkpoint folder could not be written (a full disk, an I/O error, a read-only or forbidden folder)."""


# What to do about a failed write, by errno; anything else is an I/O error of the device.
_WRITE_FIXES = {
    errno.ENOSPC: "free space on that filesystem, or give the checkpoints another with --checkpoint.dirpath",
    errno.EDQUOT: "free space within your quota, or give the checkpoints another folder with --checkpoint.dirpath",
    errno.EROFS: "the filesystem is read-only: give the checkpoints a writable folder with --checkpoint.dirpath",
    errno.EACCES: "make the folder writable, or give the checkpoints another with --checkpoint.dirpath",
    errno.EPERM: "make the folder writable, or give the checkpoints another with --checkpoint.dirpath",
}


def errno_of(error: BaseException) -> int | None:
    """The operating system's errno behind a failed write, wherever the writer put it: an OSError in the chain (a
    write through a Python file object), or the text of a Rust ``io::Error`` (safetensors)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen.errno
        if found := re.search(r"\(os error (\d+)\)", str(seen)):
            return int(found[1])
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def writing_checkpoint(folder: str | Path, newest_complete: Path | None) -> Iterator[Path]:
    """:func:`atomic_directory` for a checkpoint; a write the operating system refused raises
    :class:`CheckpointWriteFailed` naming the folder, the errno's words, the fix and ``newest_complete`` (the
    checkpoint that is still whole). Nothing of the failed folder is left behind."""
    try:
        with atomic_directory(folder) as tmp:
            yield tmp
    except Exception as err:
        code = errno_of(err)
        if code is None:
            raise
        kept = (
            f"The newest complete checkpoint is {newest_complete}, and `last` still points at it."
            if newest_complete
            else "No checkpoint of this run is complete yet."
        )
        raise CheckpointWriteFailed(
            f"Writing the checkpoint {Path(folder).resolve()} failed: {os.strerror(code)} "
            f"({errno.errorcode.get(code, code)}); nothing of it was kept. {kept} To go on, "
            f"{_WRITE_FIXES.get(code, 'check the device (it reported an I/O error)')}, then resume with "
            f"--ckpt_path last."
        ) from err


def remove_stale_temporaries(directory: str | Path) -> None:
    """Deletes folders left by a save that was killed before its rename."""
    directory = Path(directory)
    if directory.is_dir():
        for path in directory.iterdir():
            if TMP_MARKER in path.name and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def save_weights(
    weights: dict[str, torch.Tensor], config: TheWorldConfig, directory: str | Path, step: int | None = None
) -> None:
    """Writes ``model.safetensors`` (the given trainable tensors) and ``config.json`` into ``directory``.

    The safetensors header names the base models and their commits too, so the weights alone say what they
    belong on, and the optimizer ``step`` they were trained to (read back by :func:`saved_step`). Files get the
    mode of any other new file (safetensors creates them readable by the owner only).
    """
    directory = Path(directory)
    tensors = {name: t.detach().contiguous().cpu() for name, t in weights.items()}
    bases = {
        key: value
        for key in ("gemma_model_name", "gemma_revision", "cosmos_model_name", "cosmos_revision")
        if (value := getattr(config, key)) is not None
    }
    if step is not None:
        bases["step"] = str(step)
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt", **bases})
    _sort_metadata(directory / WEIGHTS_NAME)
    os.chmod(directory / WEIGHTS_NAME, _NEW_FILE_MODE)
    config.save(directory)


def _weights_header(path: Path) -> dict:
    """The JSON header of a safetensors file, checked against the file's length (no tensor is read: safetensors'
    own reader would map the file). Raises ValueError saying what is wrong."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise ValueError(f"it is {size} bytes long, shorter than any safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if 8 + length > size:
            raise ValueError(f"its header announces {length:,} bytes of metadata but the file is {size:,} bytes long")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("its header is not the JSON a safetensors file starts with") from None
    end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise ValueError(f"it ends after {size:,} bytes, before the {8 + length + end:,} its header announces")
    return header


def damage(path: str | Path) -> str | None:
    """Why a checkpoint's ``model.safetensors`` or ``training_state.pt`` cannot be read (cut short by a full disk or a
    copy that stopped, or overwritten), or None when it looks whole. Reads headers only, no weights::

        damage("runs/demo/checkpoints/checkpoint-800/model.safetensors")  # "it ends after 2,048 bytes, before ..."
    """
    path = Path(path)
    if path.name == TRAINING_STATE_NAME:  # torch.save writes a zip archive: its directory is at the very end
        return None if zipfile.is_zipfile(path) else "it is not the zip archive torch.save writes"
    try:
        _weights_header(path)
    except ValueError as err:
        return str(err)
    return None


class _NotBuilt:
    """Anything a training state holds beside plain containers (tensors, optimizer classes): left unbuilt."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _StructureOnly(pickle.Unpickler):
    """The dicts, lists and numbers of a torch.save pickle, its tensors and classes placeholders: no tensor bytes
    read, no code that the file names run."""

    def find_class(self, module: str, name: str) -> Any:
        return collections.OrderedDict if (module, name) == ("collections", "OrderedDict") else _NotBuilt

    def persistent_load(self, pid: Any) -> None:
        return None  # a tensor's storage


def saved_loader_workers(path: str | Path) -> int | None:
    """The number of loader workers whose data position a ``training_state.pt`` holds (None: no position saved, or
    a file this reader does not follow), read from its pickle alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            state = _StructureOnly(io.BytesIO(archive.read(name))).load()
        loader = lightning_private.loader_state(state)[0]
        workers = loader["_snapshot"]["_main_snapshot"]["_num_workers"]
    except (OSError, StopIteration, pickle.UnpicklingError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return workers if isinstance(workers, int) else None


def saved_step(path: str | Path) -> int | None:
    """The optimizer step a ``model.safetensors`` was saved at (``None``: written before TheWorld recorded it, or not
    a local file)."""
    try:
        step = _weights_header(Path(path)).get("__metadata__", {}).get("step")
    except (OSError, ValueError):
        return None
    return int(step) if step is not None else None


def _sort_metadata(path: Path) -> None:
    """Rewrites the header of a safetensors file with its metadata keys sorted, in place: safetensors writes them
    from a hash map, in a new order each time, and identical weights must give identical bytes (the Hub's
    deduplication, any hash comparison). The same keys and values re-serialised take the same bytes (the header's
    padding covers any difference), so the tensor data does not move."""
    with open(path, "r+b") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
        header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:
            raise ValueError(f"{path}: the sorted safetensors header is longer than the written one")
        fh.seek(8)
        fh.write(text.ljust(size))


def save_pretrained(model, directory: str | Path) -> Path:
    """``model``'s trainable weights and config into ``directory``, atomically."""
    with atomic_directory(directory) as tmp:
        save_weights(model.trainable_state_dict(), model.config, tmp)
    return Path(directory)


def resolve_files(
    path_or_repo: str,
    filenames: list[str],
    revision: str | None = None,
    token: str | None = None,
    subfolder: str | None = None,
) -> dict[str, Path]:
    """Local paths of ``filenames`` from a folder, or downloaded from a Hub repo (``user/repo`` or ``hf://``)."""
    local = Path(path_or_repo) / (subfolder or "")
    if local.is_dir():
        missing = [name for name in filenames if not (local / name).exists()]
        if missing:
            raise FileNotFoundError(f"{local} has no {missing}; is it a TheWorld checkpoint folder?")
        return {name: local / name for name in filenames}
    return download_files(path_or_repo, filenames, revision=revision, token=token, subfolder=subfolder)


_OTHER_LAYOUT = (
    "the checkpoint was trained with other options, which its config.json (beside model.safetensors) "
    "lists (projector_hidden_dim, world_patch_size, world_image_size, ...): build TheWorld with the same "
    "ones, or load it with TheWorld.from_pretrained(folder), which reads them"
)


def _reshaped(state: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> list[str]:
    shared = sorted(set(weights) & set(state))
    return [
        f"{key} {tuple(weights[key].shape)} vs {tuple(state[key].shape)}"
        for key in shared
        if weights[key].shape != state[key].shape
    ]


def check_shapes(model, weights: dict[str, torch.Tensor]) -> None:
    """Refuses tensors of another shape than the model's, saying which options decide them (not torch's dump)."""
    reshaped = _reshaped(model.state_dict(), weights)
    if reshaped:
        raise CheckpointMismatch(
            f"Checkpoint does not match the model: tensors of another shape, checkpoint vs model: "
            f"{reshaped}; {_OTHER_LAYOUT}."
        )


def check_keys(model, weights: dict[str, torch.Tensor], *, require_all_trainable: bool) -> None:
    """Refuses keys the model does not have as trainable (or at all), and tensors of another shape, naming them."""
    trainable = set(model.trainable_state_dict())
    state = model.state_dict()
    known = set(state)
    problems = []
    unknown = sorted(set(weights) - known)
    if unknown:
        problems.append(f"unexpected keys (not in the model): {unknown}")
    reshaped = _reshaped(state, weights)
    if reshaped:
        problems.append(f"tensors of another shape, checkpoint vs model ({_OTHER_LAYOUT}): {reshaped}")
    if require_all_trainable:
        not_trainable = sorted(set(weights) & known - trainable)
        missing = sorted(trainable - set(weights))
        if not_trainable:
            problems.append(f"keys of frozen parameters (check the freeze flags in config.json): {not_trainable}")
        if missing:
            problems.append(f"missing trainable keys: {missing}")
    if problems:
        raise CheckpointMismatch("Checkpoint does not match the model: " + "; ".join(problems))


def load_trainable_weights(
    model,
    source: str,
    revision: str | None = None,
    token: str | None = None,
    subfolder: str | None = None,
    strict: bool = False,
) -> list[str]:
    """Loads ``model.safetensors`` from a folder or Hub repo into ``model``; returns the keys loaded.

    ``strict=False`` allows trainable keys the file lacks (a new training stage that unfreezes more).
    """
    files = resolve_files(source, [WEIGHTS_NAME], revision=revision, token=token, subfolder=subfolder)
    weights = load_file(files[WEIGHTS_NAME])
    check_keys(model, weights, require_all_trainable=strict)
    model.load_state_dict(weights, strict=False)
    log.info("Loaded %d trainable tensors from %s", len(weights), source)
    return sorted(weights)


def load_pretrained(
    cls,
    path_or_repo: str,
    revision: str | None = None,
    token: str | None = None,
    subfolder: str | None = None,
    **overrides,
):
    files = resolve_files(
        path_or_repo, [CONFIG_NAME, WEIGHTS_NAME], revision=revision, token=token, subfolder=subfolder
    )
    config = TheWorldConfig.load(files[CONFIG_NAME])
    for key in ("gemma_revision", "cosmos_revision"):
        if overrides.get(key, getattr(config, key)) != getattr(config, key):
            log.warning(
                "%s=%s overrides the commit %s that %s was trained on.",
                key,
                overrides[key],
                getattr(config, key),
                path_or_repo,
            )
    model = cls(**{**config.to_dict(), **overrides}, token=token)
    weights = load_file(files[WEIGHTS_NAME])
    check_keys(model, weights, require_all_trainable=True)
    model.load_state_dict(weights, strict=False)
    return model
