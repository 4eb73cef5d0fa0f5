"""Provenance: the key of every sample a checkpoint was trained on (DataComp asks which uids went in).

Each checkpoint folder, ``final/`` included, holds ``provenance.parquet``: one row per trained sample, ``step``
(the optimizer step it went into, from 0), ``rank`` (the process that read it) and ``key`` (DataComp's ``uid``
wherever the data carries one: the metadata's for parquet/Hub data, the ``.json``'s for img2dataset shards; else the
shard's ``__key__`` or the metadata row), ordered by step, then rank, then as read. The schema metadata ``key_kind``
says which (:data:`KEY_KINDS`, comma-separated when mixed). A resumed run carries its checkpoint's rows on, so an
exact resume ends with the same file as a run that never stopped. DataComp's 32-character uids take about 17.5 bytes a sample on disk (zstd), 48 in memory (Arrow).

Example::

    import pyarrow.parquet as pq
    uids = pq.read_table("runs/datacomp/checkpoints/final/provenance.parquet", columns=["key"])["key"]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from theworld.layout import PROVENANCE_NAME

PROVENANCE_KEY = "provenance"  # the rows' key in a Lightning checkpoint dict, written as provenance.parquet
PROVENANCE_SCHEMA = pa.schema([("step", pa.int64()), ("rank", pa.int32()), ("key", pa.string())])
# What a key can be: DataComp's uid, a webdataset shard's __key__ (img2dataset's: unique within one download only),
# or the metadata row's number (metadata without uids).
KEY_KINDS = ("uid", "shard_key", "row")


def with_key_kinds(rows: pa.Table, kinds: set[str]) -> pa.Table:
    """``rows`` labelled with the kinds of key they hold (``pq.read_schema(path).metadata[b"key_kind"]``)."""
    return rows.replace_schema_metadata({"key_kind": ",".join(sorted(kinds))})


class TrainedSamples:
    """The samples trained so far: this rank's keys since the last gather, and (on rank 0) every gathered row.

    >>> trained = TrainedSamples()
    >>> trained.add(0, ["uid-a", "uid-b"])
    >>> trained.gather(rank=0, world_size=1).to_pydict()["key"]
    ['uid-a', 'uid-b']
    """

    def __init__(self, rows: pa.Table | None = None):
        self._chunks: list[pa.Table] = [rows] if rows is not None else []
        self._batches: list[tuple[int, Sequence[str]]] = []  # (step, keys) since the last gather

    def add(self, step: int, keys: Sequence[str]) -> None:
        self._batches.append((step, keys))

    def gather(self, rank: int, world_size: int) -> pa.Table | None:
        """Every row so far on rank 0, ``None`` elsewhere. Under DDP every rank must call it (an all-gather)."""
        parts, self._batches = [self._batches], []
        if world_size > 1:
            mine, parts = parts[0], [None] * world_size
            torch.distributed.all_gather_object(parts, mine)
        if rank != 0:
            return None
        columns: dict[str, list] = {"step": [], "rank": [], "key": []}
        for r, batches in enumerate(parts):
            for step, keys in batches:
                columns["step"] += [step] * len(keys)
                columns["rank"] += [r] * len(keys)
                columns["key"] += keys
        new = pa.table(columns, schema=PROVENANCE_SCHEMA)
        self._chunks.append(new.sort_by([("step", "ascending"), ("rank", "ascending")]))  # a stable sort
        return pa.concat_tables(self._chunks)


def write_provenance(rows: pa.Table, folder: Path) -> None:
    pq.write_table(rows, folder / PROVENANCE_NAME, compression="zstd")


def read_provenance(folder: Path) -> pa.Table | None:
    """The rows of ``folder``'s ``provenance.parquet``, or ``None`` for a checkpoint written without one."""
    path = folder / PROVENANCE_NAME
    return pq.read_table(path, schema=PROVENANCE_SCHEMA) if path.is_file() else None
