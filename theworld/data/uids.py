"""DataComp's uids as its tools hold them: 128-bit hex strings as pairs of 64-bit halves, sorted.

DataComp's subset files (the filtering track's answer: which samples of the pool to train on) are ``.npy`` arrays
of dtype ``np.dtype("u8,u8")``: each uid ``int(uid, 16)`` split as ``(high 64 bits, low 64 bits)``, in ascending
order, since its ``resharder.py`` looks each sample's uid up with ``np.searchsorted``. A file without the ``.npy``
header is read as a raw array of those pairs, as the resharder does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

UID_PAIR = np.dtype("u8,u8")
# DataComp's metadata columns that filters read: the CLIP score and the sha256 of the image at its crawl.
CLIP_SCORE_COLUMN, SHA256_COLUMN = "clip_b32_similarity_score", "sha256"
_NPY_MAGIC = b"\x93NUMPY"


def uid_pairs(uids: Iterable[str]) -> np.ndarray:
    """Hex uids -> DataComp's ``(high, low)`` pairs, in the given order (a uid that is not hex raises ValueError)."""
    return np.array([divmod(int(uid, 16), 1 << 64) for uid in uids], dtype=UID_PAIR)


def load_subset(path: str | Path) -> np.ndarray:
    """A subset file, memory-mapped (its pages shared by every loader worker), checked as DataComp writes it.

    Raises ValueError naming what is wrong: another dtype, or uids out of order (DataComp's resharder would miss
    samples of such a file without a word; sort it with ``np.sort``)."""
    with open(path, "rb") as handle:
        is_npy = handle.read(len(_NPY_MAGIC)) == _NPY_MAGIC
    subset = np.load(path, mmap_mode="r") if is_npy else np.memmap(path, UID_PAIR, mode="r")
    if subset.dtype != UID_PAIR or subset.ndim != 1:
        raise ValueError(
            f"it holds {subset.dtype} of shape {subset.shape}, not DataComp's uids (a 1-D array of "
            f"np.dtype('u8,u8'): each uid's high and low 64 bits)"
        )
    pairs = subset.view(np.uint64).reshape(-1, 2)
    # Ascending as (high, low): a pair is never below the one before it.
    below = (pairs[1:, 0] < pairs[:-1, 0]) | ((pairs[1:, 0] == pairs[:-1, 0]) & (pairs[1:, 1] < pairs[:-1, 1]))
    if below.any():
        raise ValueError(
            f"its uids are not in ascending order (first at entry {int(np.argmax(below)) + 1}), which "
            f"DataComp's resharder needs; write it sorted: np.save(path, np.sort(subset))"
        )
    return subset


def locate(sorted_pairs: np.ndarray, uid: str | None) -> int | None:
    """The index of ``uid`` in ``sorted_pairs``, found as the resharder finds it (binary search), or None when it is
    absent, missing or not DataComp's hex."""
    try:
        pair = uid_pairs([uid])[0]  # type: ignore[list-item]
    except (ValueError, TypeError, OverflowError):
        return None
    at = int(np.searchsorted(sorted_pairs, pair))
    return at if at < len(sorted_pairs) and sorted_pairs[at] == pair else None


class UidTable:
    """Columns of DataComp metadata parquet files, looked up by uid (for shards, whose ``.json`` keeps neither the
    CLIP score nor the metadata's sha256). Held as sorted uid pairs and numpy columns: 16 bytes a row, plus 4 for a
    score and 64 for a sha256."""

    def __init__(self, files: list[str], score_column: str | None, sha256_column: str | None):
        import pyarrow.dataset

        columns = {name: kind for name, kind in ((score_column, "f4"), (sha256_column, "S64")) if name}
        table = pyarrow.dataset.dataset(files, format="parquet").to_table(columns=["uid", *columns])
        pairs = uid_pairs(table["uid"].to_pylist())
        order = np.argsort(pairs)
        self.pairs = pairs[order]
        self.columns = {}
        for name, kind in columns.items():
            values = table[name].to_pylist()
            if kind == "f4":
                array = np.array([np.nan if v is None else v for v in values], np.float32)
            else:  # hex digits in either case name the same hash
                array = np.array([(v or "").lower().encode() for v in values], "S64")
            self.columns[name] = array[order]

    def row(self, uid: str | None) -> dict:
        """The metadata of ``uid`` (None for a null value), or ``{}`` when no row has it."""
        at = locate(self.pairs, uid)
        if at is None:
            return {}
        row = {}
        for name, column in self.columns.items():
            value = column[at]
            if column.dtype.kind == "f":
                row[name] = None if np.isnan(value) else float(value)
            else:
                row[name] = value.decode() or None
        return row
