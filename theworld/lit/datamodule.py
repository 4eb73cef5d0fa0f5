"""TheWorldDataModule: streaming image–caption data, processed into model inputs in the workers."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from theworld.data.processing import DEFAULT_PROMPT, TheWorldProcessor


class SampleTransform:
    """Raw ``{"key", "image", "text"}`` -> model inputs; runs inside each DataLoader worker."""

    def __init__(self, processor: TheWorldProcessor):
        self.processor = processor

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        example = self.processor(sample["image"], caption=sample["text"])
        example["key"] = sample["key"]
        return example


class TheWorldDataModule(L.LightningDataModule):
    """DataComp-style image–caption pairs from webdataset shards or Hub/parquet metadata with URLs.

    ``source: webdataset`` reads img2dataset ``.tar`` shards (paths, globs, ``{00000..00099}`` braces,
    http(s) URLs). ``source: hf`` streams parquet metadata (``dataset_name`` on the Hub, or
    ``train_data`` as parquet files) and downloads each image in the loader workers.

    The validation set never overlaps training: either ``val_data`` (other shards/files), or the
    first ``val_samples`` samples of the stream, which training then skips.

    Example (YAML)::

        data:
          source: webdataset
          train_data: /data/datacomp/{00000..01287}.tar
          val_samples: 512
          batch_size: 8
          num_workers: 8
    """

    def __init__(
        self,
        source: Literal["webdataset", "hf"] = "webdataset",
        train_data: str | list[str] | None = None,
        val_data: str | list[str] | None = None,
        dataset_name: str | None = None,
        dataset_split: str = "train",
        val_samples: int = 0,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        prompt: str = DEFAULT_PROMPT,
        max_caption_tokens: int = 64,
        shuffle_buffer: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        min_image_size: int = 32,
        clip_score_threshold: float | None = None,
        download_timeout_s: float = 10.0,
        download_retries: int = 2,
    ):
        super().__init__()
        if train_data is None and dataset_name is None:
            raise ValueError("data: set train_data (shards or parquet files) or dataset_name (a Hub dataset).")
        self.save_hyperparameters()
        self.processor: TheWorldProcessor | None = None

    def setup(self, stage: str) -> None:
        if self.processor is None:
            config = self.trainer.lightning_module.world_config
            self.processor = TheWorldProcessor.from_config(
                config, prompt=self.hparams.prompt, max_caption_tokens=self.hparams.max_caption_tokens
            )

    def _source(self, data, *, train: bool):
        from theworld.data import sources

        hp = self.hparams
        common: dict[str, Any] = dict(
            transform=SampleTransform(self.processor),
            seed=hp.seed,
            min_image_size=hp.min_image_size,
        )
        if train:
            common.update(shuffle_buffer=hp.shuffle_buffer, num_samples=hp.num_samples)
            if hp.val_data is None and hp.val_samples:
                common["skip_first"] = hp.val_samples
        elif hp.val_data is None:
            common["take_first"] = hp.val_samples
        if hp.source == "webdataset":
            return sources.WebDatasetSource(data, **common)
        return sources.ParquetURLSource(
            data_files=data,
            dataset_name=hp.dataset_name,
            split=hp.dataset_split,
            timeout_s=hp.download_timeout_s,
            retries=hp.download_retries,
            clip_score_threshold=hp.clip_score_threshold,
            **common,
        )

    def _loader(self, dataset, batch_size: int) -> StatefulDataLoader:
        workers = self.hparams.num_workers
        return StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=self.processor.collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader(self._source(self.hparams.train_data, train=True), self.hparams.batch_size)

    def val_dataloader(self):
        hp = self.hparams
        if hp.val_data is None and not hp.val_samples:
            return []
        data = hp.val_data if hp.val_data is not None else hp.train_data
        return self._loader(self._source(data, train=False), hp.val_batch_size or hp.batch_size)
