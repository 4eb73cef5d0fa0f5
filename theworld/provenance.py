"""Provenance: the key of every sample a checkpoint was trained on (DataComp asks which uids went in).

A row per trained sample: ``step`` (the optimizer step it went into, from 0 in each stage), ``rank`` (the process
that read it), ``key`` (DataComp's ``uid`` wherever the data carries one: the metadata's for parquet/Hub data, the
``.json``'s for img2dataset shards; else the shard's ``__key__`` or the metadata row; each delta's schema metadata
``key_kind`` says which, :data:`KEY_KINDS`, comma-separated when mixed) and ``stage`` (0, or one more than the stage
of the run ``--model.init_from`` started from). Each save writes only
the rows trained since the previous save, as one parquet file (a delta) in a ``provenance/`` folder beside the
checkpoint folders; each checkpoint folder, ``final/`` included, holds a small ``provenance.json`` naming the deltas
that make its history, oldest first. The same layout is pushed to the Hub::

    checkpoints/provenance/stage0-steps-000000-000999-a1b2c3.parquet   rows of steps 0-999 (a1b2c3: the session)
    checkpoints/provenance/stage0-steps-001000-001999-a1b2c3.parquet
    checkpoints/checkpoint-2000/provenance.json                        {"stage": 0, "step": 2000, "deltas": [...]}
    checkpoints/final/provenance.json

A folder's deltas are in its own ``provenance/`` subfolder if it has one (the Hub repo's root), else in the
``provenance/`` folder beside it. A delta never changes once written (each training session names its own), so a
push sends only the deltas the Hub lacks and a resume reads ``provenance.json`` alone. An exact resume ends with the
same rows as a run that never stopped. DataComp's 32-character uids take about 17.5 bytes a sample on disk (zstd);
in memory each rank holds only the keys since its last save.

Example::

    from theworld.provenance import provenance_dataset
    uids = provenance_dataset("runs/datacomp/checkpoints/final").to_table(columns=["key"])["key"]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from theworld.layout import PROVENANCE_DIR, PROVENANCE_NAME, TMP_MARKER

if TYPE_CHECKING:
    import pyarrow.dataset

log = logging.getLogger(__name__)

PROVENANCE_KEY = "provenance"  # a checkpoint dict's ProvenanceSave on write, its TrainedSamples on load
PROVENANCE_SCHEMA = pa.schema([("step", pa.int64()), ("rank", pa.int32()), ("key", pa.string()), ("stage", pa.int16())])
# What a key can be: DataComp's uid, a webdataset shard's __key__ (img2dataset's: unique within one download only),
# or the metadata row's number (metadata without uids).
KEY_KINDS = ("uid", "shard_key", "row")


def with_key_kinds(rows: pa.Table, kinds: set[str]) -> pa.Table:
    """``rows`` labelled with the kinds of key they hold (``pq.read_schema(delta).metadata[b"key_kind"]``)."""
    return rows.replace_schema_metadata({"key_kind": ",".join(sorted(kinds))})


@dataclasses.dataclass(frozen=True)
class Delta:
    """One file of rows: the samples of steps ``first_step``..``last_step`` of ``stage``."""

    name: str
    stage: int
    first_step: int
    last_step: int
    rows: int


@dataclasses.dataclass(frozen=True)
class History:
    """A checkpoint's ``provenance.json``: its stage, the steps it covers in that stage, its deltas oldest first."""

    stage: int = 0
    step: int = 0  # the next delta starts at this step
    deltas: tuple[Delta, ...] = ()

    @property
    def rows(self) -> int:
        return sum(delta.rows for delta in self.deltas)

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "stage": self.stage,
                    "step": self.step,
                    "rows": self.rows,
                    "deltas": [dataclasses.asdict(delta) for delta in self.deltas],
                },
                indent=1,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str) -> History:
        data = json.loads(text)
        return cls(data["stage"], data["step"], tuple(Delta(**delta) for delta in data["deltas"]))


def read_history(folder: str | Path) -> History | None:
    """``folder``'s ``provenance.json``, or ``None`` for a folder written without one."""
    path = Path(folder) / PROVENANCE_NAME
    return History.from_json(path.read_text()) if path.is_file() else None


def delta_folder(folder: str | Path) -> Path:
    """Where ``folder``'s deltas are: its own ``provenance/`` (a Hub repo's root), else the one beside it."""
    folder = Path(folder)
    own = folder / PROVENANCE_DIR
    return own if own.is_dir() else folder.parent / PROVENANCE_DIR


def provenance_dataset(folder: str | Path) -> pyarrow.dataset.Dataset | None:
    """The whole provenance of the checkpoint ``folder`` (``final/``, ``checkpoint-N/``, ``last``, or a Hub
    snapshot's root or folder) as a pyarrow dataset over its deltas, in training order; ``None`` without one.

    Read it whole (``.to_table()``) or in batches (``.to_batches(columns=["key"])``) for histories larger than RAM.

    >>> provenance_dataset("runs/datacomp/checkpoints/final").to_table(columns=["key"])  # doctest: +SKIP
    """
    history = read_history(folder)
    if history is None:
        return None
    where = delta_folder(folder)
    import pyarrow.dataset  # here, not at the top: it imports pandas, a second of every `theworld` start

    return pyarrow.dataset.dataset(
        [str(where / delta.name) for delta in history.deltas], schema=PROVENANCE_SCHEMA, format="parquet"
    )


def key_kinds(folder: str | Path) -> set[str]:
    """The kinds of key (:data:`KEY_KINDS`) in the provenance of the checkpoint ``folder``, from its deltas' schema
    metadata (empty without provenance)."""
    history = read_history(folder)
    where = delta_folder(folder)
    kinds: set[str] = set()
    for delta in history.deltas if history is not None else ():
        metadata = pq.read_schema(where / delta.name).metadata or {}
        kinds.update(kind for kind in metadata.get(b"key_kind", b"").decode().split(",") if kind)
    return kinds


class ProvenanceSave:
    """What one checkpoint write needs: ``rows`` (the new delta, or ``None``: nothing trained since the last save),
    ``history`` (the deltas the checkpoint covers, the new one included) and ``source`` (a folder holding earlier
    deltas that this run's ``provenance/`` may lack: those of the resumed or ``init_from`` checkpoint).

    A plain class on purpose: Lightning copies the dataclasses of a checkpoint dict, and the rows must not be copied.
    """

    def __init__(self, rows: pa.Table | None, history: History, source: Path | None):
        self.rows, self.history, self.source = rows, history, source


class TrainedSamples:
    """This rank's trained samples since the last save and, on rank 0, the history of the saves so far.

    Memory holds one save interval of keys: each save hands the new rows to the checkpoint writer as a delta.

    >>> trained = TrainedSamples()
    >>> trained.add(0, ["uid-a", "uid-b"])
    >>> save = trained.save(rank=0, world_size=1, step=1)
    >>> save.rows.to_pydict()["key"], save.history.rows
    (['uid-a', 'uid-b'], 2)
    """

    def __init__(self, history: History | None = None, source: Path | None = None):
        self.history = history or History()
        self.source = source
        self._session = secrets.token_hex(3)  # this session's deltas never share a name with another's
        self._batches: list[tuple[int, Sequence[str]]] = []  # (step, keys) since the last save

    @classmethod
    def resume(cls, folder: str | Path, step: int) -> TrainedSamples:
        """Continues the history of the checkpoint ``folder`` (of ``step``), reading its ``provenance.json`` only."""
        history = read_history(folder)
        if history is None:
            log.warning(
                "%s has no %s: this run's provenance starts at step %d and lacks the steps before.",
                folder,
                PROVENANCE_NAME,
                step,
            )
            return cls(History(step=step))
        return cls(history, delta_folder(folder))

    @classmethod
    def next_stage(cls, folder: str | Path) -> tuple[TrainedSamples, str]:
        """A new stage after the weights in ``folder`` (``--model.init_from``), and a line saying what it carries."""
        earlier = read_history(folder)
        if earlier is None:
            return cls(), (
                f"{folder} has no {PROVENANCE_NAME}: this run's provenance starts a new history "
                f"(stage 0), without the samples those weights were trained on."
            )
        history = History(stage=earlier.stage + 1, deltas=earlier.deltas)
        return cls(history, delta_folder(folder)), (
            f"this run's provenance carries the {earlier.rows:,} rows of stage{'s 0-' if earlier.stage else ' '}"
            f"{earlier.stage} from {folder}; its own rows are stage {history.stage}."
        )

    def add(self, step: int, keys: Sequence[str]) -> None:
        # As Arrow at once: 36 bytes a 32-character uid instead of a Python string's 90.
        self._batches.append((step, pa.array(keys, pa.string())))

    def save(self, rank: int, world_size: int, step: int) -> ProvenanceSave | None:
        """The rows since the previous save as the delta of a checkpoint at ``step``, on rank 0 (``None``
        elsewhere). Under DDP every rank must call it: the ranks' new rows are gathered (not the history)."""
        parts: list[Any]  # this rank's batches; under DDP every rank's, as all_gather_object fills the list
        parts, self._batches = [self._batches], []
        if world_size > 1:
            mine, parts = parts[0], [None] * world_size
            torch.distributed.all_gather_object(parts, mine)
        if rank != 0:
            return None
        stage = self.history.stage

        def column(value: int, like: pa.Array, dtype) -> pa.Array:
            return pa.array(np.full(len(like), value, dtype=dtype))

        rows = pa.Table.from_batches(
            [
                pa.record_batch(
                    [
                        column(batch_step, keys, np.int64),
                        column(r, keys, np.int32),
                        keys,
                        column(stage, keys, np.int16),
                    ],
                    schema=PROVENANCE_SCHEMA,
                )
                for r, batches in enumerate(parts)
                for batch_step, keys in batches
            ],
            schema=PROVENANCE_SCHEMA,
        )
        if world_size > 1:  # one rank's rows are in step order already
            rows = rows.sort_by([("step", "ascending"), ("rank", "ascending")])  # a stable sort
        if rows.num_rows == 0:
            return ProvenanceSave(None, self.history, self.source)
        first, last = self.history.step, step - 1
        name = f"stage{stage}-steps-{first:06d}-{last:06d}-{self._session}.parquet"
        delta = Delta(name, stage, first, last, rows.num_rows)
        self.history = History(stage, step, self.history.deltas + (delta,))
        return ProvenanceSave(rows, self.history, self.source)


def write_provenance(save: ProvenanceSave, folder: Path) -> None:
    """Writes ``save``'s new delta into the ``provenance/`` folder beside ``folder`` and ``folder``'s
    ``provenance.json``; brings earlier deltas that folder lacks from ``save.source``; removes the deltas that
    no checkpoint beside ``folder`` names any more (left by a run resumed from an older checkpoint)."""
    store = folder.parent / PROVENANCE_DIR
    store.mkdir(exist_ok=True)
    new = save.history.deltas[-1].name if save.rows is not None else None
    for delta in save.history.deltas:
        target = store / delta.name
        if target.exists():
            continue
        if delta.name == new:
            tmp = store / f"{TMP_MARKER}{delta.name}"
            pq.write_table(save.rows, tmp, compression="zstd")
            os.replace(tmp, target)
        elif save.source is not None and (save.source / delta.name).is_file():
            _link_or_copy(save.source / delta.name, target)
        else:
            log.warning(
                "The provenance delta %s is in neither %s nor %s: %s names it but cannot be read whole.",
                delta.name,
                store,
                save.source,
                folder / PROVENANCE_NAME,
            )
    (folder / PROVENANCE_NAME).write_text(save.history.to_json())
    _remove_unnamed_deltas(store, folder)


def _link_or_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f"{TMP_MARKER}{target.name}")
    try:
        os.link(source.resolve(), tmp)  # the same bytes, no copy (resolved: Linux links a symlink itself, and the
        # Hugging Face cache holds symlinks to its blobs)
    except OSError:
        shutil.copyfile(source, tmp)  # another filesystem, or no hardlinks there
    os.replace(tmp, target)


def _remove_unnamed_deltas(store: Path, written: Path) -> None:
    """Removes the deltas of ``store`` that no checkpoint folder beside it names, ``written`` (a folder's temporary
    name) counting instead of the folder it replaces."""
    replaced = written.name.split(TMP_MARKER)[0]
    named: set[str] = set()
    for manifest in store.parent.glob(f"*/{PROVENANCE_NAME}"):
        name = manifest.parent.name  # `last` links to a folder counted under its own name
        if manifest.parent != written and (name == replaced or TMP_MARKER in name or manifest.parent.is_symlink()):
            continue
        try:
            named.update(delta.name for delta in History.from_json(manifest.read_text()).deltas)
        except (OSError, ValueError, KeyError, TypeError):
            return  # a history that cannot be read might need any delta: keep them all
    for path in store.iterdir():
        if path.name not in named:
            path.unlink(missing_ok=True)


def repo_deltas(manifests: Iterable[Path]) -> dict[str, Path]:
    """Path in a Hub repo (its root ``provenance/``) -> local file, of every delta the ``provenance.json`` files
    ``manifests`` name."""
    files = {}
    for manifest in manifests:
        where = delta_folder(manifest.parent)
        for delta in History.from_json(manifest.read_text()).deltas:
            if (where / delta.name).is_file():
                files[f"{PROVENANCE_DIR}/{delta.name}"] = where / delta.name
    return files
