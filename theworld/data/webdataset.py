"""img2dataset-style WebDataset shards as a stream (tars read with the ``webdataset`` library), and writing them."""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from glob import glob
from typing import Any

from braceexpand import braceexpand

from theworld.data.config import DataConfig
from theworld.data.decode import IMAGE_EXTENSIONS, Outcome, decode_caption, decode_conversation, decode_question
from theworld.data.http import NETWORK_ERRORS, open_url
from theworld.data.latents import WORLD_LATENTS_EXT
from theworld.data.parquet import check_local_files
from theworld.data.stream import Consumer, LoaderRate, StreamSource
from theworld.data.uids import CLIP_SCORE_COLUMN, SHA256_COLUMN, UidTable

logger = logging.getLogger(__name__)


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


def shard_writer(path: str) -> Any:
    """A ``webdataset.TarWriter`` whose tars are reproducible: the same samples give byte-identical shards."""
    from webdataset import TarWriter

    return TarWriter(path, mtime=0.0, user="theworld", group="theworld", mode=0o644)


class WebDatasetSource(StreamSource):
    """img2dataset-style WebDataset shards (``{key}.jpg|png|webp``, ``{key}.txt``, ``{key}.json``) as raw samples.

    A sample is an image and its caption (``.txt``), or a question and its answer from its ``.json``: ``question``
    and ``answer`` (with ``choices``: a multiple-choice question, see :func:`theworld.data.decode.decode_question`),
    or a single-turn LLaVA-style ``conversations`` list.

    A sample's key is DataComp's ``uid`` from its ``.json`` when there is one (img2dataset's
    ``save_additional_columns=["uid"]``), else the shard's ``__key__``; the ``.json``'s ``face_bboxes`` are
    blurred with ``blur_faces``.

    Shards are dealt round-robin to the ranks × workers consumers; with fewer shards than
    consumers every consumer reads every shard and keeps every n-th sample. ``shuffle_buffer >
    0`` also permutes the shard order each epoch (seeded by ``seed`` and the epoch, so ranks
    agree); ``shuffle_buffer=0`` reads in the given order. ``resampled=True`` has each consumer
    draw whole shards at random with replacement instead, without end (seeded by ``seed``, the
    epoch and the consumer). Hold out validation data with a separate shard list, or with
    ``skip_keys`` (a predicate on keys, e.g. the complement for the validation source).
    ``num_samples`` caps each epoch at ``num_samples // world_size`` per rank and gives the
    dataset a length.

    >>> source = WebDatasetSource("data/shard-{00000..00007}.tar", shuffle_buffer=1000)  # doctest: +SKIP
    >>> loader = StatefulDataLoader(source, batch_size=32, num_workers=4, collate_fn=collate)  # doctest: +SKIP
    >>> source.set_epoch(1)  # doctest: +SKIP
    """

    NAME = "webdataset"
    OPTIONS = {
        "resampled": "draws whole shards at random, with replacement",
        "metadata": "joined to each sample by its .json's uid",
        "subset_file": "the .json's uid, before the image is decoded",
        "clip_score_threshold": "data.metadata's clip_b32_similarity_score for the .json's uid",
        "verify_sha256": "the .json's sha256 (img2dataset's, of the bytes it downloaded) against data.metadata's",
        "blur_faces": "the .json's face_bboxes; off by default (DataComp's downloader blurred them already)",
    }
    REQUIRES = {"clip_score_threshold": "metadata", "verify_sha256": "metadata"}
    DATA_KIND = ".tar shards"
    BLURS_BY_DEFAULT = False
    LOADER_RATE = LoaderRate(74.7, "image shards, bench/data_throughput.py")

    def __init__(
        self,
        urls: str | Sequence[str],
        transform: Callable[[dict], dict] | None = None,
        *,
        config: DataConfig | None = None,
        skip_keys: Callable[[str], bool] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        **options,
    ):
        super().__init__(config, transform, rank, world_size, options)
        self.urls = expand_urls(urls)
        self.skip_keys = skip_keys

    @classmethod
    def check_data(cls, data: str | Sequence[str]) -> None:
        expand_urls(data)

    @classmethod
    def build(cls, config: DataConfig, data: str | list[str] | None, *, train: bool, **common) -> WebDatasetSource:
        assert data is not None, "data.source webdataset reads shards: set data.train_data"
        return cls(data, config=config, **common)

    def __repr__(self) -> str:
        return f"WebDatasetSource({len(self.urls)} shards from {self.urls[0]!r})"

    def _start_position(self) -> dict[str, int]:
        return {"shard": 0, "offset": 0}

    def _shard_plan(self, epoch: int, consumer: Consumer) -> tuple[Iterable[int], bool]:
        """This consumer's shards in reading order (endless when resampled), and whether it must keep every n-th
        sample."""
        if self.config.resampled:  # every consumer draws on its own, whole shards
            draws = random.Random(f"{self.config.seed}:{epoch}:{consumer.index}")
            return (draws.randrange(len(self.urls)) for _ in itertools.count()), False
        order = list(range(len(self.urls)))
        if self.config.shuffle_buffer > 0:
            random.Random(f"{self.config.seed}:{epoch}").shuffle(order)
        if len(order) >= consumer.count:
            return order[consumer.index :: consumer.count], False
        return order, True

    def _records(self, state: dict, consumer: Consumer) -> Iterator[tuple[dict, Any]]:
        shards, split_samples = self._shard_plan(state["epoch"], consumer)
        first_shard, first_offset = state["shard"], state["offset"]  # state moves as we go
        for shard_pos, shard in enumerate(shards):
            if shard_pos < first_shard:  # read before a resume (drawn again: the draws are the same)
                continue
            start = first_offset if shard_pos == first_shard else 0
            for slot, record in self._read_shard(self.urls[shard], start):
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
        from webdataset.tariterators import group_by_keys, tar_file_iterator

        slot = 0
        try:
            with self._open(url) as stream:
                files = ({**member, "__url__": url} for member in tar_file_iterator(stream))
                for members in group_by_keys(files):
                    if slot >= start:
                        yield slot, members
                    slot += 1
        except (*NETWORK_ERRORS, EOFError, zlib.error, tarfile.TarError) as error:
            logger.warning("%r: shard %s failed after %d samples: %s", self, url, slot, error)
            yield slot, Outcome(url, reason="shard_error")

    def _open(self, url: str):
        if "://" in url:
            config = self.config
            return open_url(url, config.download_timeout_s, config.download_retries, config.download_backoff_s)
        return open(url, "rb")

    def _to_outcome(self, record: dict | Outcome) -> Outcome:
        if isinstance(record, Outcome):
            return record
        meta = self._metadata(record)
        key, key_kind = (str(meta["uid"]), "uid") if meta.get("uid") else (record["__key__"], "shard_key")
        joined = self._joined(meta.get("uid"))
        reason = self._pool_reason(meta.get("uid"), joined.get(CLIP_SCORE_COLUMN)) or self._hash_reason(
            meta.get("sha256"), joined.get(SHA256_COLUMN)
        )
        if reason is not None:
            return Outcome(key, reason=reason, key_kind=key_kind)
        if "conversations" in meta:  # LLaVA-style
            prompt, text, reason = decode_conversation(meta["conversations"])
        elif "question" in meta or "answer" in meta:
            prompt, text, reason = decode_question(meta.get("question"), meta.get("answer"), meta.get("choices"))
        else:  # a caption, answering data.prompt
            prompt, (text, reason) = None, decode_caption(record.get("txt"))
        if reason is not None:
            return Outcome(key, reason=reason, key_kind=key_kind)
        data = next((record[ext] for ext in IMAGE_EXTENSIONS if ext in record), None)
        if data is None:
            return Outcome(key, reason="missing_image", key_kind=key_kind)
        return self._image_outcome(
            key, data, text, record.get(WORLD_LATENTS_EXT), meta.get("face_bboxes"), key_kind, prompt
        )

    def _joined(self, uid: str | None) -> dict:
        """``data.metadata``'s row for ``uid`` (its CLIP score and sha256 as the filters need them), ``{}`` when no
        filter needs it or no row has that uid."""
        config = self.config
        if config.metadata is None or (config.clip_score_threshold is None and not config.verify_sha256):
            return {}
        if "metadata" not in self._loaded:
            self._loaded["metadata"] = UidTable(
                check_local_files(config.metadata),
                CLIP_SCORE_COLUMN if config.clip_score_threshold is not None else None,
                SHA256_COLUMN if config.verify_sha256 else None,
            )
        return self._loaded["metadata"].row(uid)

    def _metadata(self, record: dict) -> dict:
        """The sample's ``.json`` (img2dataset writes the metadata's columns there: DataComp's ``uid`` and
        ``face_bboxes``), or ``{}`` when it has none or it is not a JSON object."""
        try:
            meta = json.loads(record["json"]) if "json" in record else {}
        except ValueError:  # UnicodeDecodeError included
            logger.warning(
                "%r: %s: its .json is not JSON; reading it without uid and face boxes", self, record["__key__"]
            )
            return {}
        return meta if isinstance(meta, dict) else {}
