"""The core of a streaming source: each record to exactly one consumer, exact positions, skip counters.

A *consumer* is one DataLoader worker of one rank (``rank`` / ``world_size`` given, else torch.distributed,
else the ``RANK`` / ``WORLD_SIZE`` environment variables, else a single process). Sources yield one dict per
usable sample::

    {"key": "000000042", "image": <PIL.Image, RGB, loaded>, "text": "a red star ...", "prompt": None,
     "image_bytes": b"\\xff\\xd8...", "skipped": {"http_error": 2, "converted_mode": 1}}

``prompt`` is None for a caption (the configured ``data.prompt`` asks for it) and the question for
question-answer data, whose ``text`` is then the answer.

``image_bytes`` are the image as stored or downloaded (what a latent cache keeps); a sample of a latent cache
also carries its ``world_latents``. ``skipped`` holds the records dropped since the previous yielded item, by
reason (:mod:`theworld.data.decode`), so the main process can sum them across workers; each item is held until
the next usable record is read, so the records skipped after a worker's last item ride on that item. ``key_kind``
says what ``key`` is (``uid``: DataComp's uid; else the position in the data, see :mod:`theworld.provenance`).
With ``transform``, the item is ``transform({"key", "image", "text", ...})`` with ``skipped`` added.

Resume: ``state_dict()`` / ``load_state_dict()`` give the current worker's position in its stream (torchdata's
``StatefulDataLoader`` calls them inside each worker). Resuming needs the same ranks x workers layout. Without
a shuffle buffer resume is exact; with one, the up to ``shuffle_buffer`` records buffered in each worker at save
time are skipped on resume, never repeated (the webdataset library's own pipelines cannot resume exactly,
which is why this layer exists).

Epochs: call ``set_epoch(epoch)`` before each epoch (same on all ranks) with ``persistent_workers=False``.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from theworld.data.config import DataConfig
from theworld.data.decode import Outcome, blur_faces, datacomp_resize, decode_image
from theworld.data.uids import load_subset, locate
from theworld.errors import UserError

logger = logging.getLogger(__name__)


class NoUsableSamples(UserError):
    """A loader worker's stream gave no sample it could use (every image corrupt, unreachable or filtered): a
    problem of the data or its filters, said in one paragraph (it reaches the trainer wrapped by the DataLoader)."""


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` from the arguments, else torch.distributed, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


# Not a NamedTuple: its index and count properties would shadow tuple.index() and tuple.count().
@dataclass(frozen=True)
class Consumer:
    """This DataLoader worker of this rank; workers of one rank get consecutive indices."""

    rank: int
    world_size: int
    worker: int
    num_workers: int

    @classmethod
    def current(cls, rank: int | None, world_size: int | None) -> Consumer:
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


def shuffled(records: Iterable[tuple[dict, Any]], buffer_size: int, rng: random.Random) -> Iterator[tuple[dict, Any]]:
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


@dataclass(frozen=True)
class LoaderRate:
    """Samples per second one loader worker (one CPU core) delivers from a source, and how that was measured:
    ``theworld estimate`` sizes the loader workers from it."""

    samples_per_s: float
    measured: str


class StreamSource(IterableDataset):
    """Base of the sources: epoch/resume state, quotas, skip counting and the no-data error.

    The options come in one :class:`~theworld.data.config.DataConfig` (``config``, or its fields as keywords).
    Subclasses provide ``_start_position()`` (the position of a fresh epoch), ``_records(state,
    consumer)`` yielding ``(position after the record, record)`` for this consumer, and
    ``_to_outcome(record)``; ``_outcomes`` may be overridden to process records concurrently.

    Each source is also its entry in the registry of ``data.source`` (:mod:`theworld.data.sources`): its ``NAME``,
    the data options it applies in a way of its own (``OPTIONS``: option -> how; an option some source lists is
    refused by the sources that do not list it, and the README's table is made from these), the options each of them
    needs beside it (``REQUIRES``), what ``data.train_data`` holds (``DATA_KIND``, checked by ``check_data``), how
    fast a loader worker reads it (``LOADER_RATE``) and ``build``, which makes the reader of a split.
    """

    NAME: str
    OPTIONS: dict[str, str]
    REQUIRES: dict[str, str] = {}
    DATA_KIND: str
    BLURS_BY_DEFAULT: bool  # what blur_faces: null means here
    LOADER_RATE: LoaderRate

    def __init__(
        self,
        config: DataConfig | None,
        transform: Callable[[dict], dict] | None,
        rank: int | None,
        world_size: int | None,
        options: dict[str, Any],
    ):
        if (rank is None) != (world_size is None):
            raise ValueError("pass both rank and world_size, or neither")
        self.config = config or DataConfig(**{"source": self.NAME, **options})
        self.transform = transform
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._state: dict | None = None  # live position of the running (or last) iteration
        self._resume: dict | None = None  # loaded state, consumed by the next iteration
        self._loaded: dict[str, Any] = {}  # files read on first use in each worker (a subset file, metadata)

    def __getstate__(self) -> dict:
        # Workers read the files again themselves (a memory map is shared; pickling it would copy it).
        return {**self.__dict__, "_loaded": {}}

    # -- public API ---------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: shard order and shuffle seeds depend on it (identically on all ranks)."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """This worker's position: ``epoch``, ``consumer``, ``num_consumers``, ``yielded`` and the
        source's position keys (WebDataset: ``shard``, ``offset``; parquet: ``row``)."""
        if self._state is None:
            return self._fresh_state(Consumer.current(self.rank, self.world_size))
        return dict(self._state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration continue after the last sample ``state`` had yielded."""
        self._resume = dict(state)
        self._state = dict(state)

    def __len__(self) -> int:
        """Samples per rank per epoch; only defined when ``num_samples`` is set."""
        if self.config.num_samples is None:
            raise TypeError(f"{type(self).__name__} has no length unless num_samples is set")
        return self.config.num_samples // resolve_rank(self.rank, self.world_size)[1]

    def __iter__(self) -> Iterator[dict]:
        consumer = Consumer.current(self.rank, self.world_size)
        state = self._begin(consumer)
        rng = random.Random(f"{self.config.seed}:{state['epoch']}:{consumer.index}")
        outcomes = self._outcomes(shuffled(self._records(state, consumer), self.config.shuffle_buffer, rng))
        try:
            yield from self._emit(outcomes, state, consumer)
        finally:
            outcomes.close()  # stops download threads when the consumer stops early

    # -- subclass hooks -------------------------------------------------------------------------

    @classmethod
    def check_data(cls, data: str | list[str]) -> None:
        """Raises FileNotFoundError or ValueError when ``data`` (train_data, val_data) is not this source's data."""
        raise NotImplementedError

    @classmethod
    def build(cls, config: DataConfig, data: str | list[str] | None, *, train: bool, **common) -> StreamSource:
        """The reader of ``data`` (None: the source's own default, e.g. dataset_name) for training or validation."""
        raise NotImplementedError

    def _start_position(self) -> dict[str, int]:
        raise NotImplementedError

    def _records(self, state: dict, consumer: Consumer) -> Iterator[tuple[dict, Any]]:
        raise NotImplementedError

    def _to_outcome(self, record: Any) -> Outcome:
        raise NotImplementedError

    def _outcomes(self, records: Iterator[tuple[dict, Any]]) -> Generator[tuple[dict, Outcome], None, None]:
        for position, record in records:
            yield position, self._to_outcome(record)

    # -- helpers ------------------------------------------------------------------------------

    def _pool_reason(self, uid: str | None, clip_score: float | None) -> str | None:
        """Why DataComp's selection leaves a record out of the pool, before anything is downloaded or decoded: its
        uid is not in ``subset_file`` (``not_in_subset``), or its CLIP score is under ``clip_score_threshold`` or
        missing (``low_clip_score``)."""
        config = self.config
        if config.subset_file is not None:
            if "subset" not in self._loaded:
                self._loaded["subset"] = load_subset(config.subset_file)
            if locate(self._loaded["subset"], uid) is None:
                return "not_in_subset"
        threshold = config.clip_score_threshold
        if threshold is not None and (clip_score is None or clip_score < threshold):
            return "low_clip_score"
        return None

    def _hash_reason(self, actual: str | None, expected: str | None) -> str | None:
        """``hash_mismatch`` when ``verify_sha256`` is on and the image's sha256 is not the metadata's (hex digits
        in either case name the same hash: DataComp's are lower case, other tools write upper)."""
        if self.config.verify_sha256 and (not expected or (actual or "").lower() != expected.lower()):
            return "hash_mismatch"
        return None

    def _image_outcome(
        self,
        key: str,
        data: bytes,
        text: str | None,
        world_latents: bytes | None = None,
        faces: list | None = None,
        key_kind: str = "uid",
        prompt: str | None = None,
    ) -> Outcome:
        """Decodes an image (its size limits checked on the header first) into the record's outcome, resized as
        DataComp's download does (``datacomp_resize``) and its ``faces`` blurred (``blur_faces``) if asked."""
        config = self.config
        image, reason, converted = decode_image(data, config.min_image_size, config.max_image_pixels)
        outcome = Outcome(
            key,
            image=image,
            text=text,
            reason=reason,
            converted=converted,
            image_bytes=data,
            world_latents=world_latents,
            key_kind=key_kind,
            prompt=prompt,
        )
        if image is not None and config.datacomp_resize:
            outcome.image = datacomp_resize(image)
        blur = self.BLURS_BY_DEFAULT if config.blur_faces is None else config.blur_faces
        if image is not None and blur and faces:
            assert outcome.image is not None  # the decoded image, maybe resized
            outcome.image = blur_faces(outcome.image, faces)
        if outcome.image is not image:
            outcome.image_bytes = None  # the stored bytes are not what was trained: a latent cache re-encodes the image
        return outcome

    def _fresh_state(self, consumer: Consumer) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "consumer": consumer.index,
            "num_consumers": consumer.count,
            "yielded": 0,
            **self._start_position(),
        }

    def _begin(self, consumer: Consumer) -> dict:
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

    def _quota(self, consumer: Consumer) -> int | None:
        """Samples this worker yields when ``num_samples`` is set: equal per rank (DDP needs it)."""
        if self.config.num_samples is None:
            return None
        per_rank = self.config.num_samples // consumer.world_size
        return per_rank // consumer.num_workers + int(consumer.worker < per_rank % consumer.num_workers)

    def _emit(self, outcomes: Iterator[tuple[dict, Outcome]], state: dict, consumer: Consumer) -> Iterator[dict]:
        quota = self._quota(consumer)
        if quota is not None and state["yielded"] >= quota:
            return
        pending: Counter[str] = Counter()  # reasons since the last usable record: ride on the next
        totals: Counter[str] = Counter()
        consecutive_bad = 0
        # The latest usable sample is held until the next one is read (or the stream ends), so that records
        # skipped after a worker's last sample ride on that sample instead of going uncounted.
        held: tuple[dict, dict] | None = None  # (position after it, sample)
        position: dict = {}
        for position, outcome in outcomes:
            if outcome.reason is not None:
                pending[outcome.reason] += 1
                totals[outcome.reason] += 1
                consecutive_bad += 1
                logger.debug("%r: skipping %s (%s)", self, outcome.key, outcome.reason)
                if consecutive_bad >= self.config.max_consecutive_bad:
                    raise NoUsableSamples(
                        self._no_usable_message(consumer, f"{consecutive_bad} consecutive bad samples", totals)
                    )
                continue
            consecutive_bad = 0
            if outcome.converted:
                pending["converted_mode"] += 1
                totals["converted_mode"] += 1
            if held is not None:
                yield self._release(held, state)
            held = (position, self._sample(outcome, pending))
            pending = Counter()
            if quota is not None and state["yielded"] + 1 >= quota:
                yield self._release(held, state)
                return
        if held is not None:
            skipped = held[1]["skipped"]  # the tail: skipped after this worker's last sample
            for reason, count in pending.items():
                skipped[reason] = skipped.get(reason, 0) + count
            yield self._release((position, held[1]), state)
        if state["yielded"] == 0:
            raise NoUsableSamples(self._no_usable_message(consumer, "the end of its stream", totals))
        if quota is not None:
            logger.warning("%r (%s): data ran out after %d of %d samples", self, consumer, state["yielded"], quota)
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

    def _sample(self, outcome: Outcome, skipped: Counter[str]) -> dict:
        """The item a usable record becomes, carrying the counts of the records skipped before it."""
        sample: dict[str, Any] = {
            "key": outcome.key,
            "image": outcome.image,
            "text": outcome.text,
            "image_bytes": outcome.image_bytes,
            "key_kind": outcome.key_kind,
            "prompt": outcome.prompt,
        }
        if outcome.world_latents is not None:
            sample["world_latents"] = outcome.world_latents
        if self.transform is not None:
            sample = self.transform(sample)
        sample["skipped"] = dict(skipped)
        return sample

    @staticmethod
    def _release(held: tuple[dict, dict], state: dict) -> dict:
        """Hands a held sample on: the position saved with it is the one after it (StatefulDataLoader snapshots
        ``state`` while the generator is suspended at the yield), so a resume re-reads what came after it."""
        position, sample = held
        state.update(position)
        state["yielded"] += 1
        return sample

    def _no_usable_message(self, consumer: Consumer, when: str, totals: Counter) -> str:
        return (
            f"No usable samples in {self!r} ({consumer}) after {when}: skipped {dict(totals) or 'nothing'}. "
            "Check that the data exists and is reachable, that the filters "
            f"(min_image_size={self.config.min_image_size}, "
            f"max_image_pixels={self.config.max_image_pixels}{self._filter_summary()}) are not too strict, and that "
            "there are at least as many samples as ranks x workers."
        )

    def _filter_summary(self) -> str:
        return ""
