"""DataComp-style metadata (parquet files or a Hub dataset) as a stream, each row's image downloaded by URL."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from glob import glob
from typing import Any

from theworld.data.config import DataConfig
from theworld.data.decode import Outcome, decode_caption, decode_conversation, decode_question
from theworld.data.http import NETWORK_ERRORS, download, failure_reason
from theworld.data.stream import Consumer, LoaderRate, StreamSource
from theworld.data.uids import CLIP_SCORE_COLUMN, SHA256_COLUMN
from theworld.retry import describe_error

logger = logging.getLogger(__name__)


class ParquetURLSource(StreamSource):
    """DataComp-style metadata (parquet files or a Hub dataset) whose images are downloaded.

    Rows are captions (``text``) or, as ``DataConfig`` says, question-answer rows (``question_column``,
    ``answer_column``, ``choices_column``) or LLaVA-style ``conversations_column``; ``image_column`` reads
    embedded images instead of downloading ``url``.

    Metadata streams through ``datasets.load_dataset(..., streaming=True)`` in every worker;
    global row ``i`` goes to consumer ``i % (ranks × workers)``, so every consumer reads all
    metadata but downloads only its own images. Each worker downloads through a pool of
    ``max_connections`` threads over a window of upcoming rows and yields in row order. Timeouts,
    HTTP 408/429/5xx and dropped connections are retried ``retries`` times with exponential
    backoff; other HTTP errors are not.

    The row order is fixed; ``shuffle_buffer > 0`` shuffles rows (before download) within a
    buffer seeded by ``seed``, the epoch and the worker. Hold out validation rows with
    ``skip_first=K`` on the training source and ``take_first=K`` on the validation source.

    >>> source = ParquetURLSource("meta/*.parquet", clip_score_threshold=0.28, skip_first=1000)  # doctest: +SKIP
    >>> source = ParquetURLSource(dataset_name="mlfoundations/datacomp_small")  # doctest: +SKIP
    """

    NAME = "hf"
    OPTIONS = {
        "dataset_name": "streams the Hub dataset's metadata",
        "dataset_split": "the split of dataset_name",
        "val_samples": "holds out the first K rows",
        "question_column": "question-answer rows",
        "answer_column": "question-answer rows",
        "choices_column": "question-answer rows",
        "conversations_column": "LLaVA-style rows",
        "image_column": "images embedded in the rows",
        "download_threads": "parallel image downloads per loader worker",
        "max_image_bytes": "downloads over it are too_large",
        "disallowed_header_directives": "the image's X-Robots-Tag, before its body is read (opted_out)",
        "subset_file": "the row's uid, before the download",
        "clip_score_threshold": "the row's clip_b32_similarity_score, before the download",
        "verify_sha256": "the downloaded bytes against the row's sha256",
        "blur_faces": "the row's face_bboxes; on by default",
    }
    DATA_KIND = "parquet files"
    BLURS_BY_DEFAULT = True
    LOADER_RATE = LoaderRate(
        59.3, "parquet + downloads from a local server with DataComp's rules, bench/data_throughput.py"
    )

    def __init__(
        self,
        data_files: str | Sequence[str] | dict[str, str | Sequence[str]] | None = None,
        transform: Callable[[dict], dict] | None = None,
        *,
        config: DataConfig | None = None,
        dataset_name: str | None = None,
        split: str = "train",
        skip_first: int = 0,
        take_first: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        url_column: str = "url",
        text_column: str = "text",
        key_column: str = "uid",
        clip_score_column: str = CLIP_SCORE_COLUMN,
        face_bboxes_column: str = "face_bboxes",
        sha256_column: str = SHA256_COLUMN,
        metadata_batch_size: int = 1024,
        **options,
    ):
        super().__init__(config, transform, rank, world_size, options)
        if (data_files is None) == (dataset_name is None):
            raise ValueError("pass exactly one of data_files and dataset_name")
        if data_files is not None:
            check_local_files(data_files)
        self.data_files = data_files
        self.dataset_name = dataset_name
        self.split = split
        self.url_column = url_column
        self.text_column = text_column
        self.key_column = key_column
        self.clip_score_column = clip_score_column
        self.face_bboxes_column = face_bboxes_column
        self.sha256_column = sha256_column
        self.skip_first = skip_first
        self.take_first = take_first
        self.metadata_batch_size = metadata_batch_size
        self._unexpected_seen: set[type] = set()  # exception types already logged (the skips are counted anyway)
        self._disallowed = frozenset(d.strip().lower() for d in self.config.disallowed_header_directives)

    @classmethod
    def check_data(cls, data: str | Sequence[str]) -> None:
        check_local_files(data)

    @classmethod
    def build(cls, config: DataConfig, data: str | list[str] | None, *, train: bool, **common) -> ParquetURLSource:
        if config.val_data is None:  # the held-out rows come first: validation takes them, training skips them
            common.update(skip_first=config.val_samples) if train else common.update(take_first=config.val_samples)
        return cls(
            data_files=data,
            dataset_name=None if data is not None else config.dataset_name,
            split=config.dataset_split,
            config=config,
            **common,
        )

    def __repr__(self) -> str:
        what = (
            f"data_files={self.data_files!r}" if self.data_files is not None else f"dataset_name={self.dataset_name!r}"
        )
        return f"ParquetURLSource({what}, split={self.split!r})"

    def _filter_summary(self) -> str:
        return f", clip_score_threshold={self.config.clip_score_threshold}, timeout_s={self.config.download_timeout_s}"

    def _start_position(self) -> dict[str, int]:
        return {"row": self.skip_first}

    def _load_metadata(self):
        # Imported here: `datasets` is slow to import and only this source needs it.
        from datasets import load_dataset

        if self.data_files is not None:
            dataset = load_dataset("parquet", data_files=self.data_files, split=self.split, streaming=True)
        else:
            dataset = load_dataset(self.dataset_name, split=self.split, streaming=True)
        if dataset.column_names is None:  # schema unknown until read: take the rows as they come
            return dataset
        config = self.config
        required = {config.image_column or self.url_column}
        if config.conversations_column:
            required.add(config.conversations_column)
        elif config.question_column:
            required |= {config.question_column, config.answer_column}
        else:
            required.add(self.text_column)
        if self.config.clip_score_threshold is not None:
            required.add(self.clip_score_column)
        if self.config.subset_file is not None:
            required.add(self.key_column)
        if self.config.verify_sha256:
            required.add(self.sha256_column)
        missing = required - set(dataset.column_names)
        if missing:
            raise ValueError(f"{self!r}: columns {sorted(missing)} not in {dataset.column_names}")
        wanted = required | {self.key_column, self.face_bboxes_column, config.choices_column}
        return dataset.select_columns([c for c in dataset.column_names if c in wanted])

    def _records(self, state: dict, consumer: Consumer) -> Iterator[tuple[dict, Any]]:
        row = state["row"]
        dataset = self._load_metadata()
        if row:
            dataset = dataset.skip(row)
        # Arrow batches let us drop other consumers' rows without converting them to Python.
        for table in dataset.with_format("arrow").iter(batch_size=self.metadata_batch_size):
            stop = len(table) if self.take_first is None else min(len(table), self.take_first - row)
            mine = list(range((consumer.index - row) % consumer.count, stop, consumer.count))
            for i, values in zip(mine, python_rows(table.take(mine)), strict=True):
                yield {"row": row + i + 1}, (row + i, values)
            row += len(table)
            if self.take_first is not None and row >= self.take_first:
                return

    def _outcomes(self, records: Iterator[tuple[dict, Any]]) -> Generator[tuple[dict, Outcome], None, None]:
        # A sliding window of 2 × max_connections rows is in flight, so one slow URL doesn't stall
        # the others; results leave in input order, keeping the stream (and resume) deterministic.
        pool = ThreadPoolExecutor(self.config.download_threads, thread_name_prefix="image-download")
        window: deque = deque()
        try:
            for position, record in records:
                window.append((position, pool.submit(self._to_outcome, record)))
                if len(window) >= 2 * self.config.download_threads:
                    position, future = window.popleft()
                    yield position, future.result()
            while window:
                position, future = window.popleft()
                yield position, future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _to_outcome(self, record: tuple[int, dict]) -> Outcome:
        row, values = record
        uid = values.get(self.key_column)
        key, key_kind = (str(uid), "uid") if uid else (f"{row:09d}", "row")
        try:
            return self._fetch_and_decode(key, key_kind, values)
        except Exception as error:  # one image from the open web never ends the run: a counted skip
            if type(error) not in self._unexpected_seen:
                self._unexpected_seen.add(type(error))
                logger.warning(
                    "%r: fetching or decoding %s raised %s; such images are skipped as unexpected_error",
                    self,
                    key,
                    describe_error(error),
                    exc_info=True,
                )
            return Outcome(key, reason="unexpected_error", key_kind=key_kind)

    def _fetch_and_decode(self, key: str, key_kind: str, values: dict) -> Outcome:
        config = self.config
        reason = self._pool_reason(values.get(self.key_column), values.get(self.clip_score_column))
        if reason is not None:
            return Outcome(key, reason=reason, key_kind=key_kind)
        if config.conversations_column:
            prompt, text, reason = decode_conversation(values[config.conversations_column])
        elif config.question_column:
            prompt, text, reason = decode_question(
                values[config.question_column], values[config.answer_column], values.get(config.choices_column)
            )
        else:
            prompt, (text, reason) = None, decode_caption(values[self.text_column])
        if reason is not None:
            return Outcome(key, reason=reason, key_kind=key_kind)
        if config.image_column:  # embedded: raw bytes, or a `datasets` Image as {bytes, path}
            data = values[config.image_column]
            data = data.get("bytes") if isinstance(data, dict) else data
            if not data:
                return Outcome(key, reason="missing_image", key_kind=key_kind)
        else:
            url = values[self.url_column] or ""  # a missing URL fails like a malformed one
            try:
                data = download(
                    url,
                    config.download_timeout_s,
                    config.download_retries,
                    config.download_backoff_s,
                    max_bytes=config.max_image_bytes,
                    disallowed=self._disallowed,
                )
            except NETWORK_ERRORS as error:
                logger.debug("%r: %s failed: %s", self, url, error)
                return Outcome(key, reason=failure_reason(error), key_kind=key_kind)
        if config.verify_sha256:
            reason = self._hash_reason(hashlib.sha256(data).hexdigest(), values[self.sha256_column])
            if reason is not None:
                return Outcome(key, reason=reason, key_kind=key_kind)
        return self._image_outcome(
            key, data, text, faces=values.get(self.face_bboxes_column), key_kind=key_kind, prompt=prompt
        )


def python_rows(table: Any) -> list[dict]:
    """An Arrow table's rows as dicts. A string column is UTF-8 by Parquet's rules, but writers that skip the check
    exist: a value that does not decode comes as its bytes, so that its row is skipped by reason (a caption:
    ``bad_utf8``) instead of ending the run."""
    import pyarrow as pa

    try:
        return table.to_pylist()
    except UnicodeDecodeError:
        texts = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        raw = table.cast(pa.schema([f.with_type(pa.binary()) if f.name in texts else f for f in table.schema]))
        rows = raw.to_pylist()
        for row in rows:
            for name in texts:
                try:
                    row[name] = row[name].decode() if row[name] is not None else None
                except UnicodeDecodeError:
                    pass  # kept as bytes: decode_caption calls it bad_utf8
        return rows


def check_local_files(data_files: str | Sequence[str] | dict) -> list[str]:
    """The parquet files that paths/globs name (a URL as it is); fails early, naming the pattern, when a local one
    matches nothing or matches .tar shards."""
    if isinstance(data_files, dict):
        patterns = [p for value in data_files.values() for p in ([value] if isinstance(value, str) else value)]
    else:
        patterns = [data_files] if isinstance(data_files, str) else list(data_files)
    files = []
    for pattern in patterns:
        if "://" in pattern:
            files.append(pattern)
            continue
        matches = sorted(glob(os.path.expanduser(pattern)))
        if not matches:
            raise FileNotFoundError(f"No parquet files match {pattern!r}")
        if any(match.endswith(".tar") for match in matches):
            raise ValueError(
                f"{pattern!r} matches .tar shards, which the webdataset source reads (data.source: "
                "webdataset), not parquet metadata"
            )
        files += matches
    return files
