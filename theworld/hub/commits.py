"""Commit planning of the Hub sync, as pure functions: which files a push of a saved checkpoint holds under its
``hub_strategy`` (:func:`repo_files`), and what its one commit sends and deletes against the repo's current files
(:func:`plan_commit`). They read the checkpoint folders' file names and provenance.json files, never the network;
:class:`~theworld.callbacks.HubSyncCallback` stages and commits what they say.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from pathlib import Path

from theworld.hub.report import RUNS_DIR, SAMPLES_DIR
from theworld.hub.strategies import Strategy
from theworld.layout import (
    FINAL_DIR,
    LAST_CHECKPOINT,
    PROVENANCE_DIR,
    PROVENANCE_NAME,
    RESUME_FILES,
    TRAINING_STATE_NAME,
    WEIGHT_FILES,
    SavedCheckpoint,
)
from theworld.provenance import repo_deltas


@dataclasses.dataclass(frozen=True)
class CommitPlan:
    """One commit against the repo's current files: what to send, what to delete."""

    send: frozenset[str]  # staged paths to upload (immutable files the Hub already holds are left out)
    delete: tuple[str, ...]  # remote paths the commit deletes, sorted


def repo_files(strategy: Strategy, saved: SavedCheckpoint) -> dict[str, Path]:
    """Path in the repo -> local file: what a push of ``saved`` holds under ``strategy`` (besides the written
    card and report files). Reads only which files the checkpoint folders hold and the provenance.json files."""

    def folder_files(folder: Path, names: tuple[str, ...], prefix: str = "") -> dict[str, Path]:
        # provenance.json travels with the weights it describes (folders from older versions lack it).
        names += (PROVENANCE_NAME,) if (folder / PROVENANCE_NAME).is_file() else ()
        return {f"{prefix}{name}": folder / name for name in names}

    files = folder_files(saved.path, WEIGHT_FILES)
    if saved.final:
        files.update(folder_files(saved.path, WEIGHT_FILES, f"{FINAL_DIR}/"))
    latest = saved.newest_resumable if saved.final else saved.path
    if strategy.last_checkpoint and latest is not None:
        files.update(folder_files(latest, RESUME_FILES, f"{LAST_CHECKPOINT}/"))
    if strategy.checkpoint_folders:
        for folder in saved.kept:
            files.update(folder_files(folder, RESUME_FILES, f"{folder.name}/"))
    return {**files, **repo_deltas(path for rel, path in files.items() if rel.endswith(PROVENANCE_NAME))}


def stale_files(strategy: Strategy, remote: Collection[str], staged: Collection[str]) -> list[str]:
    """Remote files a push of ``staged`` replaces or prunes: an outdated ``last-checkpoint/``, checkpoint-N/ folders
    pruned locally (``checkpoint_folders``), the previous gallery and event files."""
    staged_folders = {rel.split("/")[0] for rel in staged if "/" in rel}

    def managed(path: str) -> bool:
        folder, sep, _ = path.partition("/")
        if not sep or folder == FINAL_DIR:
            return False
        if folder in (SAMPLES_DIR, RUNS_DIR):
            return True
        if folder == LAST_CHECKPOINT:
            return folder in staged_folders
        return strategy.checkpoint_folders and f"{folder}/{TRAINING_STATE_NAME}" in remote

    return sorted(p for p in remote if p not in staged and managed(p))


def plan_commit(strategy: Strategy, remote: Collection[str], staged: Collection[str]) -> CommitPlan:
    """What a commit of ``staged`` (paths in the repo) does to a repo holding ``remote``."""
    # checkpoint-N/ folders and provenance deltas never change once written: one already on the Hub is not
    # hashed or sent again.
    folders = {rel.split("/")[0] for rel in staged if "/" in rel} - {LAST_CHECKPOINT, FINAL_DIR}
    on_hub = {f for f in folders if all(f"{f}/{name}" in remote for name in RESUME_FILES)}
    on_hub |= {rel for rel in staged if rel.startswith(f"{PROVENANCE_DIR}/") and rel in remote}
    send = frozenset(rel for rel in staged if rel.split("/")[0] not in on_hub and rel not in on_hub)
    return CommitPlan(send=send, delete=tuple(stale_files(strategy, remote, staged)))
