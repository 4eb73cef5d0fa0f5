"""TheWorldDataModule: streaming image–caption data, processed into model inputs in the workers."""

from __future__ import annotations

import dataclasses
import glob
import os
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from theworld import stops
from theworld.config import TheWorldConfig
from theworld.data.config import DataConfig
from theworld.data.latents import unpack_world_latents
from theworld.data.parquet import check_local_files
from theworld.data.processing import TheWorldProcessor
from theworld.data.sources import SOURCES, refuse_inapplicable
from theworld.data.uids import CLIP_SCORE_COLUMN, SHA256_COLUMN, load_subset
from theworld.data.workers import worker_options
from theworld.errors import UserError
from theworld.hub import pin_bases


class ConsumedStateDataLoader(StatefulDataLoader):
    """A ``StatefulDataLoader`` whose ``state_dict()`` counts batches handed out *before* the newest.

    Lightning's training fetcher holds one batch ahead (to know when the stream ends), so when a
    checkpoint is saved after step N the loader has already yielded batch N+1. Saving its live
    state would skip that batch on resume; the state from before the newest batch is exact.
    """

    def __iter__(self):
        iterator = self._start_workers()
        self._consumed_state = None
        while True:
            before = super().state_dict()
            try:
                batch = next(iterator)
            except StopIteration:
                self._consumed_state = None
                return
            self._consumed_state = before
            yield batch

    def _start_workers(self):
        # The workers start whole (a worker still starting when the trainer exits prints a traceback): a stop that
        # comes meanwhile happens once they have, and the iterator, never bound to a name here, ends them as the
        # stop unwinds (bound, the stop's traceback would keep it, and them, until the process exits).
        with stops.held():
            return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        consumed = getattr(self, "_consumed_state", None)
        return consumed if consumed is not None else super().state_dict()


class DataConfigError(UserError):
    """A ``data:`` setting that cannot work (shards that match nothing, a hold-out the source cannot make)."""


class SampleTransform:
    """Raw ``{"key", "image", "text", "prompt"}`` -> model inputs; runs inside each DataLoader worker. A sample's own
    ``prompt`` (question-answer data) replaces ``data.prompt``; ``text`` is what the model learns to answer.

    A sample from a latent cache (``world_latents``) is checked against ``world_config`` and its
    stored world tokens replace the VAE input.
    """

    def __init__(self, processor: TheWorldProcessor, world_config: TheWorldConfig | None = None):
        self.processor = processor
        self.world_config = world_config

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        latents = sample.get("world_latents")
        if latents is not None and self.processor.world_tokens:
            assert self.world_config is not None, "a latent cache is read with the model's world_config"
            latents = unpack_world_latents(latents, self.world_config)
        else:
            latents = None
        example = self.processor(
            sample["image"], caption=sample["text"], prompt=sample.get("prompt"), world_latents=latents
        )
        example["key"] = sample["key"]
        example["key_kind"] = sample["key_kind"]
        example["caption"] = sample["text"]
        return example


class ImageFiles(Dataset):
    """Images to caption with ``theworld predict``: a folder, a glob, or a list of paths."""

    SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}

    def __init__(self, paths: str | list[str], processor: TheWorldProcessor):
        self.paths = self.expand(paths)
        self.processor = processor

    @classmethod
    def expand(cls, paths: str | list[str]) -> list[str]:
        found: list[str] = []
        for entry in [paths] if isinstance(paths, str) else paths:
            if os.path.isdir(entry):
                found += sorted(str(p) for p in Path(entry).iterdir() if p.suffix.lower() in cls.SUFFIXES)
            else:
                matches = sorted(glob.glob(entry))
                if not matches:
                    raise FileNotFoundError(f"data.predict_data: no image matches {entry!r}.")
                found += matches
        if not found:
            raise FileNotFoundError(f"data.predict_data: no images ({sorted(cls.SUFFIXES)}) in {paths!r}.")
        return found

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with Image.open(self.paths[index]) as image:
            example = self.processor(image.convert("RGB"))
        example["key"] = self.paths[index]
        return example


class TheWorldDataModule(L.LightningDataModule):
    """DataComp-style image–caption pairs from webdataset shards or Hub/parquet metadata with URLs.

    ``source: webdataset`` reads img2dataset ``.tar`` shards (paths, globs, ``{00000..00099}`` braces,
    http(s) URLs), latent-cache shards from ``theworld cache_latents`` included. ``source: hf`` streams parquet
    metadata (``dataset_name`` on the Hub, or ``train_data`` as parquet files) and downloads each image in the
    loader workers.

    The validation set never overlaps training: either ``val_data`` (other shards/files), or (for
    ``source: hf``) the first ``val_samples`` rows of the stream, which training then skips.

    Example (YAML)::

        data:
          source: webdataset
          train_data: /data/datacomp/{00000..01286}.tar
          val_data: /data/datacomp/01287.tar
          batch_size: 8
          num_workers: 8
    """

    def __init__(self, **options):
        """
        Args:
            options: The ``data:`` settings: every field of ``DataConfig``.
        """
        super().__init__()
        self.save_hyperparameters()
        self.config = DataConfig(**options)
        refuse_inapplicable(self.config)
        self._check_paths()
        self.processor: TheWorldProcessor | None = None
        self.world_config: TheWorldConfig | None = None

    def _check_paths(self) -> None:
        """Local shards, parquet files and the files of the DataComp filters that are missing or unreadable stop the
        run here, before any weight loads."""
        config = self.config
        source = SOURCES[config.source]
        for field in ("train_data", "val_data"):
            value = getattr(config, field)
            if value is None:
                continue
            try:
                source.check_data(value)
            except (FileNotFoundError, ValueError) as err:
                raise DataConfigError(
                    f"data.{field}={value!r}: {err}. Give {source.DATA_KIND} as paths, globs, folders or brace "
                    f"patterns (relative paths start from {Path.cwd()})."
                ) from None
        if config.subset_file is not None:
            try:
                load_subset(config.subset_file)
            except (OSError, ValueError) as err:
                raise DataConfigError(
                    f"data.subset_file={config.subset_file!r}: {err}. Give DataComp's subset file: a .npy of uids "
                    f"as np.dtype('u8,u8') pairs, sorted (relative paths start from {Path.cwd()})."
                ) from None
        if config.metadata is not None:
            import pyarrow.dataset

            needed = {"uid"}  # and the columns of the filters that read it
            if config.clip_score_threshold is not None:
                needed.add(CLIP_SCORE_COLUMN)
            if config.verify_sha256:
                needed.add(SHA256_COLUMN)
            try:
                names = pyarrow.dataset.dataset(check_local_files(config.metadata), format="parquet").schema.names
                if needed - set(names):
                    raise ValueError(f"its columns {sorted(names)} lack {sorted(needed - set(names))}")
            except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
                raise DataConfigError(
                    f"data.metadata={config.metadata!r}: {err}. Give DataComp's metadata parquet files, the ones "
                    f"the shards were downloaded from (relative paths start from {Path.cwd()})."
                ) from None
        if config.predict_data is not None:
            try:
                paths = ImageFiles.expand(config.predict_data)
            except FileNotFoundError as err:
                raise DataConfigError(
                    f"{err} Give a folder of images, a glob (my_images/*.jpg) or a list of paths "
                    f"(relative paths start from {Path.cwd()})."
                ) from None
            for path in paths:  # each file's header only, before any weight loads
                try:
                    Image.open(path).close()
                except (OSError, Image.DecompressionBombError) as err:
                    raise DataConfigError(
                        f"data.predict_data: {path} is not an image that can be read ({err}). Remove it from "
                        f"data.predict_data, or give a folder (only its {', '.join(sorted(ImageFiles.SUFFIXES))} "
                        f"files are read) or a glob (my_images/*.jpg)."
                    ) from None

    def setup(self, stage: str) -> None:
        if self.processor is None:
            assert self.trainer is not None  # Lightning calls setup from a trainer
            # Pinned like the model will be: the processor files and a latent cache's layout check match its bases.
            self.world_config = pin_bases(self.trainer.lightning_module.world_config)
            self.processor = TheWorldProcessor.from_config(
                self.world_config, prompt=self.config.prompt, max_caption_tokens=self.config.max_caption_tokens
            )

    def predict_dataloader(self) -> DataLoader:
        if not self.config.predict_data:
            raise ValueError("theworld predict needs --data.predict_data (an image folder, glob or list of paths).")
        assert self.processor is not None, "setup() builds the processor"
        return DataLoader(
            ImageFiles(self.config.predict_data, self.processor),
            batch_size=self.config.val_batch_size or self.config.batch_size,
            num_workers=self.config.num_workers,
            collate_fn=partial(self.processor.collate, padding_side="left", normalize=False),
            **worker_options(self.config.num_workers),
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        # The loaders ship uint8 pixels (a quarter of float32's bytes through shared memory, pinning
        # and the host-to-device copy); they become the model's float inputs here, on the device.
        assert self.processor is not None, "setup() builds the processor"
        return self.processor.normalize(batch)

    def raw_source(self, *, train: bool, transform=None, rank: int = 0, world_size: int = 1, one_pass: bool = False):
        """The training (``train=True``) or validation source as configured, for ``rank`` of ``world_size``;
        ``transform`` runs on each sample in the loader workers. ``one_pass``: every sample once, never resampled
        (as validation always reads)."""
        config = self.config
        data = config.train_data if train or config.val_data is None else config.val_data
        if data is None and config.dataset_name is None:
            raise DataConfigError("data: set train_data (shards or parquet files) or dataset_name (a Hub dataset).")
        if one_pass or not train:
            config = dataclasses.replace(config, resampled=False)
        if not train:  # validation reads in order, all of it
            config = dataclasses.replace(config, shuffle_buffer=0, num_samples=None)
        # Each rank reads its own share; the sources split further across loader workers.
        return SOURCES[config.source].build(
            config, data, train=train, transform=transform, rank=rank, world_size=world_size
        )

    def _loader(self, dataset, batch_size: int) -> StatefulDataLoader:
        workers = self.config.num_workers
        assert self.processor is not None, "setup() builds the processor"
        return ConsumedStateDataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=partial(self.processor.collate, normalize=False),
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
            **worker_options(workers),
        )

    def _source(self, *, train: bool):
        assert self.processor is not None and self.trainer is not None, "setup() builds the processor"
        return self.raw_source(
            train=train,
            transform=SampleTransform(self.processor, self.world_config),
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
        )

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader(self._source(train=True), self.config.batch_size)

    def val_dataloader(self):
        hp = self.config
        if hp.val_data is None and not hp.val_samples:
            return []
        return self._loader(self._source(train=False), hp.val_batch_size or hp.batch_size)
