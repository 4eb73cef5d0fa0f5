"""Raw image–caption sources: img2dataset WebDataset tars and DataComp-style parquet + URLs.

Both sources are torch ``IterableDataset``\\ s that yield one dict per usable sample::

    {"key": "000000042", "image": <PIL.Image, RGB, loaded>, "text": "a red star ...",
     "image_bytes": b"\xff\xd8...", "skipped": {"http_error": 2, "converted_mode": 1}}

``image_bytes`` are the image as it was stored or downloaded (what a latent cache keeps). A
WebDataset sample with a ``{key}.world.pth`` member (written by ``theworld.latent_cache``) also
carries those bytes as ``world_latents``.

``skipped`` holds the records dropped since the previous yielded item, by reason, so the main
process can sum them across DataLoader workers (workers can't share counters). Reasons:

=====================  ====================================================================
``http_error``          download failed: HTTP 4xx/5xx, connection or DNS error, bad URL
``timeout``             download slower than ``timeout_s`` (after retries)
``corrupt``             bytes PIL can't decode
``truncated``           image data ends early
``decompression_bomb``  more than ``max_image_pixels`` pixels
``too_small``           shorter side below ``min_image_size``
``missing_caption``     no caption
``empty_caption``       caption is only whitespace
``bad_utf8``            caption bytes are not valid UTF-8
``low_clip_score``      below ``clip_score_threshold`` (parquet)
``missing_image``       tar sample without an image member (webdataset)
``shard_error``         a shard could not be opened or read to the end (webdataset)
``converted_mode``      not a skip: the yielded sample was L/CMYK/P/RGBA/... converted to RGB
                        (alpha composited on white)
=====================  ====================================================================

Counts of records skipped after the last item a worker yields in an epoch have no item to ride
on; they are logged at INFO instead.

With ``transform``, the item is ``transform({"key", "image", "text"})`` with ``skipped`` added.

Splitting: records are divided among all *consumers*, i.e. every DataLoader worker of every
rank (``rank`` / ``world_size`` arguments, else ``torch.distributed``, else the ``RANK`` /
``WORLD_SIZE`` environment variables, else a single process). Each record goes to exactly one
consumer per epoch.

Resume: ``state_dict()`` / ``load_state_dict()`` give the current worker's position in its stream
(torchdata's ``StatefulDataLoader`` calls them inside each worker). Resuming needs the same
ranks × workers layout. Without a shuffle buffer resume is exact; with one, the up to
``shuffle_buffer`` records buffered in each worker at save time are skipped on resume.

Epochs: call ``set_epoch(epoch)`` on the dataset before each epoch (same on all ranks) with
``persistent_workers=False``, since workers get a fresh copy of the dataset each epoch.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import posixpath
import random
import socket
import tarfile
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from glob import glob
from typing import Any, NamedTuple
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

import torch
from braceexpand import braceexpand
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
WORLD_LATENTS_EXT = "world.pth"  # the member a latent cache adds to each sample
# Every reason a ``skipped`` counter can hold (see the table above), in a fixed order for reductions.
SKIP_REASONS = (
    "http_error", "timeout", "corrupt", "truncated", "decompression_bomb", "too_small", "missing_caption",
    "empty_caption", "bad_utf8", "low_clip_score", "missing_image", "shard_error", "converted_mode",
)
_USER_AGENT = "theworld-data/0.1"
# Errors that mean "this download/shard failed", as opposed to bugs in our code.
_NETWORK_ERRORS = (OSError, ValueError, http.client.HTTPException)


# ---------------------------------------------------------------------------------------------
# Decoding and validation, shared by both sources


@dataclass
class Outcome:
    """What became of one record: a usable sample (``reason is None``) or why it was skipped."""

    key: str
    image: Image.Image | None = None
    text: str | None = None
    reason: str | None = None
    converted: bool = False
    image_bytes: bytes | None = None
    world_latents: bytes | None = None


def decode_caption(raw: str | bytes | None) -> tuple[str | None, str | None]:
    """Return ``(caption, None)`` or ``(None, reason)``; bytes must be UTF-8."""
    if raw is None:
        return None, "missing_caption"
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "bad_utf8"
    text = raw.strip()
    if not text:
        return None, "empty_caption"
    return text, None


def decode_image(
    data: bytes, min_image_size: int, max_image_pixels: int
) -> tuple[Image.Image | None, str | None, bool]:
    """Decode untrusted image bytes to a loaded RGB image.

    Returns ``(image, None, converted)`` or ``(None, reason, False)``. Size limits are checked on
    the header, before any pixels are decoded, so a decompression bomb costs nothing; PIL's own
    global bomb check (``Image.MAX_IMAGE_PIXELS``) still applies on top.

    >>> image, reason, converted = decode_image(data, min_image_size=32, max_image_pixels=50_000_000)  # doctest: +SKIP
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_image_pixels:
            return None, "decompression_bomb", False
        if min(width, height) < min_image_size:
            return None, "too_small", False
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, "decompression_bomb", False
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ...) on bad bytes
        return None, ("truncated" if "truncated" in str(error).lower() else "corrupt"), False
    if image.mode == "RGB":
        return image, None, False
    return _to_rgb(image), None, True


def _to_rgb(image: Image.Image) -> Image.Image:
    # Transparent pixels often hide arbitrary (usually black) colour: show white instead.
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


# ---------------------------------------------------------------------------------------------
# HTTP


def _is_transient(error: BaseException) -> bool:
    """Worth retrying: timeouts, throttling, server errors, dropped connections; not 404 or DNS."""
    if isinstance(error, HTTPError):
        return error.code in (408, 429) or error.code >= 500
    if isinstance(error, URLError):
        return not isinstance(error.reason, socket.gaierror)
    return isinstance(error, (TimeoutError, ConnectionError, http.client.HTTPException))


def _failure_reason(error: BaseException) -> str:
    timed_out = isinstance(error, TimeoutError) or (
        isinstance(error, URLError) and isinstance(error.reason, TimeoutError)
    )
    return "timeout" if timed_out else "http_error"


def _with_retries(fn: Callable[[], Any], retries: int, backoff_s: float) -> Any:
    """Call ``fn``, retrying transient network errors with exponential backoff."""
    attempt = 0
    while True:
        try:
            return fn()
        except _NETWORK_ERRORS as error:
            if attempt >= retries or not _is_transient(error):
                raise
            time.sleep(backoff_s * 2**attempt)
            attempt += 1


def _urlopen(url: str, timeout_s: float):
    return urlopen(Request(url, headers={"User-Agent": _USER_AGENT}), timeout=timeout_s)


def _download(url: str, timeout_s: float) -> bytes:
    # urlopen's timeout bounds each socket operation; the deadline also bounds a slow trickle.
    deadline = time.monotonic() + timeout_s
    chunks = []
    with _urlopen(url, timeout_s) as response:
        while chunk := response.read(1 << 16):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"downloading {url} took over {timeout_s}s")
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# Splitting across ranks and workers


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` from the arguments, else torch.distributed, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class _Consumer(NamedTuple):
    """This DataLoader worker of this rank; workers of one rank get consecutive indices."""

    rank: int
    world_size: int
    worker: int
    num_workers: int

    @classmethod
    def current(cls, rank: int | None, world_size: int | None) -> _Consumer:
        rank, world_size = resolve_rank(rank, world_size)
        info = get_worker_info()
        return cls(rank, world_size, *((info.id, info.num_workers) if info is not None else (0, 1)))

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers

    def __str__(self) -> str:
        return f"rank {self.rank}/{self.world_size}, worker {self.worker}/{self.num_workers}"


def _shuffled(records: Iterable[tuple[dict, Any]], buffer_size: int, rng: random.Random) -> Iterator[tuple[dict, Any]]:
    """Shuffle ``(position, record)`` pairs through a buffer.

    Each record leaves with the position of the latest record *read*, so a saved position never
    points before a record still in the buffer: buffered records are skipped on resume.
    """
    if buffer_size <= 0:
        yield from records
        return
    buffer: list = []
    position: dict = {}
    for position, record in records:
        buffer.append(record)
        if len(buffer) >= buffer_size:
            yield position, _pop_random(buffer, rng)
    while buffer:
        yield position, _pop_random(buffer, rng)


def _pop_random(buffer: list, rng: random.Random) -> Any:
    i = rng.randrange(len(buffer))
    buffer[i], buffer[-1] = buffer[-1], buffer[i]
    return buffer.pop()


# ---------------------------------------------------------------------------------------------
# The shared machinery: state, validation counts, errors


class _RawSource(IterableDataset):
    """Base of the sources: epoch/resume state, quotas, skip counting and the no-data error.

    Subclasses provide ``_start_position()`` (the position of a fresh epoch), ``_records(state,
    consumer)`` yielding ``(position after the record, record)`` for this consumer, and
    ``_to_outcome(record)``; ``_outcomes`` may be overridden to process records concurrently.
    """

    def __init__(
        self,
        *,
        transform: Callable[[dict], dict] | None,
        shuffle_buffer: int,
        seed: int,
        num_samples: int | None,
        min_image_size: int,
        max_image_pixels: int,
        max_consecutive_bad: int,
        rank: int | None,
        world_size: int | None,
    ):
        if (rank is None) != (world_size is None):
            raise ValueError("pass both rank and world_size, or neither")
        self.transform = transform
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.num_samples = num_samples
        self.min_image_size = min_image_size
        self.max_image_pixels = max_image_pixels
        self.max_consecutive_bad = max_consecutive_bad
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._state: dict | None = None  # live position of the running (or last) iteration
        self._resume: dict | None = None  # loaded state, consumed by the next iteration

    # -- public API ---------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: shard order and shuffle seeds depend on it (identically on all ranks)."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """This worker's position: ``epoch``, ``consumer``, ``num_consumers``, ``yielded`` and the
        source's position keys (WebDataset: ``shard``, ``offset``; parquet: ``row``)."""
        if self._state is None:
            return self._fresh_state(_Consumer.current(self.rank, self.world_size))
        return dict(self._state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration continue after the last sample ``state`` had yielded."""
        self._resume = dict(state)
        self._state = dict(state)

    def __len__(self) -> int:
        """Samples per rank per epoch; only defined when ``num_samples`` is set."""
        if self.num_samples is None:
            raise TypeError(f"{type(self).__name__} has no length unless num_samples is set")
        return self.num_samples // resolve_rank(self.rank, self.world_size)[1]

    def __iter__(self) -> Iterator[dict]:
        consumer = _Consumer.current(self.rank, self.world_size)
        state = self._begin(consumer)
        rng = random.Random(f"{self.seed}:{state['epoch']}:{consumer.index}")
        outcomes = self._outcomes(_shuffled(self._records(state, consumer), self.shuffle_buffer, rng))
        try:
            yield from self._emit(outcomes, state, consumer)
        finally:
            outcomes.close()  # stops download threads when the consumer stops early

    # -- subclass hooks -------------------------------------------------------------------------

    def _start_position(self) -> dict[str, int]:
        raise NotImplementedError

    def _records(self, state: dict, consumer: _Consumer) -> Iterator[tuple[dict, Any]]:
        raise NotImplementedError

    def _to_outcome(self, record: Any) -> Outcome:
        raise NotImplementedError

    def _outcomes(self, records: Iterator[tuple[dict, Any]]) -> Iterator[tuple[dict, Outcome]]:
        for position, record in records:
            yield position, self._to_outcome(record)

    # -- helpers ------------------------------------------------------------------------------

    def _image_outcome(self, key: str, data: bytes, text: str, world_latents: bytes | None = None) -> Outcome:
        image, reason, converted = decode_image(data, self.min_image_size, self.max_image_pixels)
        return Outcome(key, image=image, text=text, reason=reason, converted=converted, image_bytes=data,
                       world_latents=world_latents)

    def _fresh_state(self, consumer: _Consumer) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "consumer": consumer.index,
            "num_consumers": consumer.count,
            "yielded": 0,
            **self._start_position(),
        }

    def _begin(self, consumer: _Consumer) -> dict:
        if self._resume is None:
            state = self._fresh_state(consumer)
        else:
            state, self._resume = self._resume, None
            if (state["consumer"], state["num_consumers"]) != (consumer.index, consumer.count):
                raise ValueError(
                    f"{self!r}: the state was saved by consumer {state['consumer']} of {state['num_consumers']} "
                    f"but this is consumer {consumer.index} of {consumer.count} ({consumer}); resume with the "
                    "same world_size and num_workers"
                )
            if state["epoch"] != self.epoch:
                logger.info("%r: resuming epoch %d (set_epoch said %d)", self, state["epoch"], self.epoch)
        self._state = state
        return state

    def _quota(self, consumer: _Consumer) -> int | None:
        """Samples this worker yields when ``num_samples`` is set: equal per rank (DDP needs it)."""
        if self.num_samples is None:
            return None
        per_rank = self.num_samples // consumer.world_size
        return per_rank // consumer.num_workers + int(consumer.worker < per_rank % consumer.num_workers)

    def _emit(self, outcomes: Iterator[tuple[dict, Outcome]], state: dict, consumer: _Consumer) -> Iterator[dict]:
        quota = self._quota(consumer)
        if quota is not None and state["yielded"] >= quota:
            return
        pending: Counter[str] = Counter()  # reasons since the last yielded item: ride on the next
        totals: Counter[str] = Counter()
        consecutive_bad = 0
        for position, outcome in outcomes:
            # Updated before yielding: StatefulDataLoader snapshots while we are suspended.
            state.update(position)
            if outcome.reason is not None:
                pending[outcome.reason] += 1
                totals[outcome.reason] += 1
                consecutive_bad += 1
                logger.debug("%r: skipping %s (%s)", self, outcome.key, outcome.reason)
                if consecutive_bad >= self.max_consecutive_bad:
                    raise RuntimeError(
                        self._no_usable_message(consumer, f"{consecutive_bad} consecutive bad samples", totals)
                    )
                continue
            consecutive_bad = 0
            if outcome.converted:
                pending["converted_mode"] += 1
                totals["converted_mode"] += 1
            sample = {"key": outcome.key, "image": outcome.image, "text": outcome.text,
                      "image_bytes": outcome.image_bytes}
            if outcome.world_latents is not None:
                sample["world_latents"] = outcome.world_latents
            if self.transform is not None:
                sample = self.transform(sample)
            sample["skipped"] = dict(pending)
            pending.clear()
            state["yielded"] += 1
            yield sample
            if quota is not None and state["yielded"] >= quota:
                return
        if state["yielded"] == 0:
            raise RuntimeError(self._no_usable_message(consumer, "the end of its stream", totals))
        if quota is not None:
            logger.warning("%r (%s): data ran out after %d of %d samples", self, consumer, state["yielded"], quota)
        if pending:
            logger.info("%r (%s): skipped after the last sample of the epoch: %s", self, consumer, dict(pending))
        # Worth a line only when something was skipped (the counts are logged as data/skipped_* too).
        logger.log(
            logging.INFO if totals else logging.DEBUG,
            "%r (%s): epoch %d done, %d samples, skipped %s",
            self,
            consumer,
            state["epoch"],
            state["yielded"],
            dict(totals),
        )

    def _no_usable_message(self, consumer: _Consumer, when: str, totals: Counter) -> str:
        return (
            f"No usable samples in {self!r} ({consumer}) after {when}: skipped {dict(totals) or 'nothing'}. "
            f"Check that the data exists and is reachable, that the filters (min_image_size={self.min_image_size}, "
            f"max_image_pixels={self.max_image_pixels}{self._filter_summary()}) are not too strict, and that "
            "there are at least as many samples as ranks x workers."
        )

    def _filter_summary(self) -> str:
        return ""


# ---------------------------------------------------------------------------------------------
# WebDataset tars


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Expand brace patterns, globs and directories (``*.tar`` inside) into shard paths/URLs.

    >>> expand_urls("data/shard-{00000..00002}.tar")  # doctest: +SKIP
    ['data/shard-00000.tar', 'data/shard-00001.tar', 'data/shard-00002.tar']
    """
    expanded = []
    for pattern in [urls] if isinstance(urls, str) else urls:
        for item in braceexpand(pattern):
            if "://" in item:  # remote: can't be globbed or checked up front
                expanded.append(item)
                continue
            item = os.path.expanduser(item)
            if os.path.isdir(item):
                matches = sorted(glob(os.path.join(item, "*.tar")))
            elif any(char in item for char in "*?["):
                matches = sorted(glob(item))
            else:
                matches = [item] if os.path.exists(item) else []
            if not matches:
                raise FileNotFoundError(f"No shards match {item!r} (from {pattern!r})")
            expanded += matches
    if not expanded:
        raise ValueError(f"No shard URLs given: {urls!r}")
    return expanded


def add_tar_sample(tar: tarfile.TarFile, key: str, members: dict[str, bytes]) -> None:
    """Writes ``{key}.{ext}`` for each member, adjacent as WebDataset expects (img2dataset's layout).

    Fixed metadata (mtime 0, no owner): the same samples give byte-identical tars.
    """
    for ext, data in members.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))


def _group_by_key(tar: tarfile.TarFile) -> Iterator[dict[str, Any]]:
    """Yield ``{"__key__": key, ext: bytes, ...}`` for each run of adjacent members sharing a key.

    As in WebDataset, the key is the member path up to the first dot of its file name.
    """
    current: dict[str, Any] | None = None
    for member in tar:
        directory, name = posixpath.split(member.name)
        if not member.isfile() or name.startswith("."):  # skip dirs and e.g. macOS "._" files
            continue
        stem, _, ext = name.partition(".")
        key = posixpath.join(directory, stem)
        data = tar.extractfile(member).read()
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key}
        current[ext.lower()] = data
    if current is not None:
        yield current


class WebDatasetSource(_RawSource):
    """img2dataset-style WebDataset shards (``{key}.jpg|png|webp``, ``{key}.txt``) as raw samples.

    Shards are dealt round-robin to the ranks × workers consumers; with fewer shards than
    consumers every consumer reads every shard and keeps every n-th sample. ``shuffle_buffer >
    0`` also permutes the shard order each epoch (seeded by ``seed`` and the epoch, so ranks
    agree); ``shuffle_buffer=0`` reads in the given order. Hold out validation data with a
    separate shard list, or with ``skip_keys`` (a predicate on keys, e.g. the complement for the
    validation source). ``num_samples`` caps each epoch at ``num_samples // world_size`` per
    rank and gives the dataset a length.

    >>> source = WebDatasetSource("data/shard-{00000..00007}.tar", shuffle_buffer=1000)  # doctest: +SKIP
    >>> loader = StatefulDataLoader(source, batch_size=32, num_workers=4, collate_fn=collate)  # doctest: +SKIP
    >>> source.set_epoch(1)  # doctest: +SKIP
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        transform: Callable[[dict], dict] | None = None,
        *,
        shuffle_buffer: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        min_image_size: int = 32,
        max_image_pixels: int = 50_000_000,
        skip_keys: Callable[[str], bool] | None = None,
        max_consecutive_bad: int = 1000,
        timeout_s: float = 30.0,
        retries: int = 2,
        retry_backoff_s: float = 0.5,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__(
            transform=transform,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            num_samples=num_samples,
            min_image_size=min_image_size,
            max_image_pixels=max_image_pixels,
            max_consecutive_bad=max_consecutive_bad,
            rank=rank,
            world_size=world_size,
        )
        self.urls = expand_urls(urls)
        self.skip_keys = skip_keys
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s

    def __repr__(self) -> str:
        return f"WebDatasetSource({len(self.urls)} shards from {self.urls[0]!r})"

    def _start_position(self) -> dict[str, int]:
        return {"shard": 0, "offset": 0}

    def _shard_plan(self, epoch: int, consumer: _Consumer) -> tuple[list[int], bool]:
        """This consumer's shards in reading order, and whether it must keep every n-th sample."""
        order = list(range(len(self.urls)))
        if self.shuffle_buffer > 0:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        if len(order) >= consumer.count:
            return order[consumer.index :: consumer.count], False
        return order, True

    def _records(self, state: dict, consumer: _Consumer) -> Iterator[tuple[dict, Any]]:
        shards, split_samples = self._shard_plan(state["epoch"], consumer)
        first_shard, first_offset = state["shard"], state["offset"]  # state moves as we go
        for shard_pos in range(first_shard, len(shards)):
            start = first_offset if shard_pos == first_shard else 0
            for slot, record in self._read_shard(self.urls[shards[shard_pos]], start):
                # When splitting samples, each sample (or shard failure) belongs to one consumer;
                # rotating by shard position balances consumers when shards are short.
                if split_samples and (slot + shard_pos) % consumer.count != consumer.index:
                    continue
                if isinstance(record, dict) and self.skip_keys is not None and self.skip_keys(record["__key__"]):
                    continue
                yield {"shard": shard_pos, "offset": slot + 1}, record

    def _read_shard(self, url: str, start: int) -> Iterator[tuple[int, dict | Outcome]]:
        """Yield ``(slot, members)`` for the samples of a shard from slot ``start`` on (0-based);
        a shard that fails to open or read yields a ``shard_error`` outcome in the next slot and ends."""
        slot = 0
        try:
            with self._open(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
                for members in _group_by_key(tar):
                    if slot >= start:
                        yield slot, members
                    slot += 1
        except (*_NETWORK_ERRORS, EOFError, zlib.error, tarfile.TarError) as error:
            logger.warning("%r: shard %s failed after %d samples: %s", self, url, slot, error)
            yield slot, Outcome(url, reason="shard_error")

    def _open(self, url: str):
        if "://" in url:
            return _with_retries(partial(_urlopen, url, self.timeout_s), self.retries, self.retry_backoff_s)
        return open(url, "rb")

    def _to_outcome(self, record: dict | Outcome) -> Outcome:
        if isinstance(record, Outcome):
            return record
        key = record["__key__"]
        text, reason = decode_caption(record.get("txt"))
        if reason is not None:
            return Outcome(key, reason=reason)
        data = next((record[ext] for ext in IMAGE_EXTENSIONS if ext in record), None)
        if data is None:
            return Outcome(key, reason="missing_image")
        return self._image_outcome(key, data, text, record.get(WORLD_LATENTS_EXT))


# ---------------------------------------------------------------------------------------------
# Parquet metadata + image URLs


class ParquetURLSource(_RawSource):
    """DataComp-style metadata (parquet files or a Hub dataset) whose images are downloaded.

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

    def __init__(
        self,
        data_files: str | Sequence[str] | dict[str, str | Sequence[str]] | None = None,
        transform: Callable[[dict], dict] | None = None,
        *,
        dataset_name: str | None = None,
        split: str = "train",
        url_column: str = "url",
        text_column: str = "text",
        key_column: str = "uid",
        clip_score_column: str = "clip_b32_similarity_score",
        clip_score_threshold: float | None = None,
        timeout_s: float = 10.0,
        retries: int = 2,
        retry_backoff_s: float = 0.5,
        max_connections: int = 16,
        skip_first: int = 0,
        take_first: int | None = None,
        metadata_batch_size: int = 1024,
        shuffle_buffer: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        min_image_size: int = 32,
        max_image_pixels: int = 50_000_000,
        max_consecutive_bad: int = 1000,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__(
            transform=transform,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            num_samples=num_samples,
            min_image_size=min_image_size,
            max_image_pixels=max_image_pixels,
            max_consecutive_bad=max_consecutive_bad,
            rank=rank,
            world_size=world_size,
        )
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
        self.clip_score_threshold = clip_score_threshold
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.max_connections = max_connections
        self.skip_first = skip_first
        self.take_first = take_first
        self.metadata_batch_size = metadata_batch_size

    def __repr__(self) -> str:
        what = (
            f"data_files={self.data_files!r}" if self.data_files is not None else f"dataset_name={self.dataset_name!r}"
        )
        return f"ParquetURLSource({what}, split={self.split!r})"

    def _filter_summary(self) -> str:
        return f", clip_score_threshold={self.clip_score_threshold}, timeout_s={self.timeout_s}"

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
        required = {self.url_column, self.text_column}
        if self.clip_score_threshold is not None:
            required.add(self.clip_score_column)
        missing = required - set(dataset.column_names)
        if missing:
            raise ValueError(f"{self!r}: columns {sorted(missing)} not in {dataset.column_names}")
        wanted = required | {self.key_column}
        return dataset.select_columns([c for c in dataset.column_names if c in wanted])

    def _records(self, state: dict, consumer: _Consumer) -> Iterator[tuple[dict, Any]]:
        row = state["row"]
        dataset = self._load_metadata()
        if row:
            dataset = dataset.skip(row)
        # Arrow batches let us drop other consumers' rows without converting them to Python.
        for table in dataset.with_format("arrow").iter(batch_size=self.metadata_batch_size):
            stop = len(table) if self.take_first is None else min(len(table), self.take_first - row)
            mine = list(range((consumer.index - row) % consumer.count, stop, consumer.count))
            for i, values in zip(mine, table.take(mine).to_pylist(), strict=True):
                yield {"row": row + i + 1}, (row + i, values)
            row += len(table)
            if self.take_first is not None and row >= self.take_first:
                return

    def _outcomes(self, records: Iterator[tuple[dict, Any]]) -> Iterator[tuple[dict, Outcome]]:
        # A sliding window of 2 × max_connections rows is in flight, so one slow URL doesn't stall
        # the others; results leave in input order, keeping the stream (and resume) deterministic.
        pool = ThreadPoolExecutor(self.max_connections, thread_name_prefix="image-download")
        window: deque = deque()
        try:
            for position, record in records:
                window.append((position, pool.submit(self._to_outcome, record)))
                if len(window) >= 2 * self.max_connections:
                    position, future = window.popleft()
                    yield position, future.result()
            while window:
                position, future = window.popleft()
                yield position, future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _to_outcome(self, record: tuple[int, dict]) -> Outcome:
        row, values = record
        key = str(values.get(self.key_column) or f"{row:09d}")
        text, reason = decode_caption(values[self.text_column])
        if reason is not None:
            return Outcome(key, reason=reason)
        if self.clip_score_threshold is not None:
            score = values[self.clip_score_column]
            if score is None or score < self.clip_score_threshold:
                return Outcome(key, reason="low_clip_score")
        url = values[self.url_column] or ""  # a missing URL fails like a malformed one
        try:
            data = _with_retries(partial(_download, url, self.timeout_s), self.retries, self.retry_backoff_s)
        except _NETWORK_ERRORS as error:
            logger.debug("%r: %s failed: %s", self, url, error)
            return Outcome(key, reason=_failure_reason(error))
        return self._image_outcome(key, data, text)


def check_local_files(data_files: str | Sequence[str] | dict) -> None:
    """Fail early, naming the pattern, when local parquet paths/globs match nothing."""
    if isinstance(data_files, dict):
        patterns = [p for value in data_files.values() for p in ([value] if isinstance(value, str) else value)]
    else:
        patterns = [data_files] if isinstance(data_files, str) else list(data_files)
    for pattern in patterns:
        if "://" not in pattern and not glob(os.path.expanduser(pattern)):
            raise FileNotFoundError(f"No parquet files match {pattern!r}")
