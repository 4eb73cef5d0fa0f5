"""The latent cache: encode a dataset's images through the Cosmos VAE once, then train from the stored tokens.

With the VAE frozen its world tokens never change, so ``theworld cache_latents`` computes them
once and writes WebDataset shards holding, per sample, the original image bytes, the caption
and ``{key}.world.pth`` (the world tokens with the VAE and layout that made them). Training
reads those shards with ``data.source: webdataset``: no VAE forward and no VAE-sized resize
per step, and no image downloads when the data came from URLs. Each run checks that the
cached tokens were made with its own ``cosmos_model_name`` / ``world_image_size`` /
``world_patch_size``.

    theworld cache_latents --config configs/datacomp.yaml --output_dir /data/datacomp-latents/train
    theworld cache_latents --config configs/datacomp.yaml --output_dir /data/datacomp-latents/val --split val
    theworld fit --config configs/datacomp.yaml --data.source webdataset \\
        --data.train_data /data/datacomp-latents/train --data.val_data /data/datacomp-latents/val \\
        --data.dataset_name null --data.val_samples 0 --data.verify_sha256 false  # filtered when cached

Several GPUs split the work: ``torchrun --nproc_per_node 8 -m theworld cache_latents ...``
(each rank writes its own ``shard-r{rank}-*.tar``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from theworld.config import TheWorldConfig
from theworld.data.latents import WORLD_LATENTS_EXT, LatentCacheError, layout, pack_world_latents
from theworld.data.processing import world_pixel_input
from theworld.data.webdataset import shard_writer
from theworld.data.workers import worker_options
from theworld.world import WorldEncoder, resolve_dtype

log = logging.getLogger(__name__)

STORAGE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
_IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


class _WorldInput:
    """In the loader workers: the VAE-sized uint8 pixels of each sample, and what the shard keeps
    (the image bytes under the extension of their format)."""

    def __init__(self, image_size: int):
        self.pixels = world_pixel_input(image_size)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image, data = sample["image"], sample["image_bytes"]
        image_format: str | None
        if data is None:  # the source changed the image (blurred faces): keep what training sees
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            data, image_format = buffer.getvalue(), "PNG"
        else:  # PIL keeps the decoded file's format on images it did not have to convert to RGB.
            image_format = image.format or Image.open(io.BytesIO(data)).format
        return {
            "key": sample["key"],
            "text": sample["text"],
            "prompt": sample.get("prompt"),
            "image_bytes": data,
            "image_ext": _IMAGE_EXTENSIONS.get(image_format or "", "png"),
            "world_pixels": self.pixels.resize(image),
        }


def _durable_rename(tmp: Path, final: Path) -> None:
    """Makes ``tmp``'s bytes durable, then gives it its final name: a reader sees all of it or nothing."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.rename(final)


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {
        name: [sample[name] for sample in samples] for name in samples[0] if name != "world_pixels"
    }
    batch["world_pixels"] = torch.stack([sample["world_pixels"] for sample in samples])
    return batch


class _ShardWriter:
    """Writes ``{prefix}-{n:05d}.tar``; a shard appears under its name only once complete (``close``)."""

    def __init__(self, directory: Path, prefix: str, shards: list[str]):
        self.directory, self.prefix = directory, prefix
        self.shards = list(shards)
        self.count = 0  # samples in the open shard
        self._writer: Any = None  # a webdataset TarWriter on {name}.tar.partial (webdataset has no types)

    def add(self, key: str, members: dict[str, bytes]) -> None:
        if self._writer is None:
            self._path = self.directory / f"{self.prefix}-{len(self.shards):05d}.tar"
            self._writer = shard_writer(str(self._path.with_suffix(".tar.partial")))
        self._writer.write({"__key__": key, **members})
        self.count += 1

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        _durable_rename(self._path.with_suffix(".tar.partial"), self._path)
        self.shards.append(self._path.name)
        self._writer, self.count = None, 0


class _Progress:
    """``{prefix}-progress.pt``: the completed shards and the loader position right after them.

    Saved after every shard, removed when the cache is complete; a re-run resumes from it.
    """

    def __init__(self, directory: Path, prefix: str):
        self.path = directory / f"{prefix}-progress.pt"

    def load(self) -> dict[str, Any] | None:
        return torch.load(self.path, weights_only=True) if self.path.exists() else None

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        _durable_rename(tmp, self.path)


def _resume_point(output_dir: Path, prefix: str, progress: _Progress) -> dict[str, Any]:
    """Where to start: fresh, or after the shards a killed run completed (anything newer is removed)."""
    state = progress.load()
    existing = sorted(path.name for path in output_dir.glob(f"{prefix}-*.tar"))
    if state is None:
        if existing:
            raise LatentCacheError(
                f"{output_dir} already holds {len(existing)} {prefix}-*.tar shards of a finished cache; write the "
                "cache to an empty folder (or delete them) so that no sample is stored twice."
            )
        return {"loader": None, "samples": 0, "skipped": {}, "shards": [], "seconds": 0.0}
    # A shard renamed after the last progress save, and the shard being written, hold samples the
    # saved loader position will read again.
    for name in set(existing) - set(state["shards"]):
        (output_dir / name).unlink()
    for partial in output_dir.glob(f"{prefix}-*.tar.partial"):
        partial.unlink()
    log.info(
        "Resuming the latent cache in %s after %d shards (%d samples).",
        output_dir,
        len(state["shards"]),
        state["samples"],
    )
    return state


def write_latent_cache(
    config: TheWorldConfig,
    source,
    output_dir: str | Path,
    *,
    batch_size: int = 32,
    num_workers: int = 4,
    samples_per_shard: int = 1000,
    dtype: str = "bfloat16",
    device: str | torch.device | None = None,
    shard_prefix: str = "shard",
    limit: int | None = None,
) -> dict[str, Any]:
    """Encodes every usable sample of ``source`` (a stream of ``theworld.data``: webdataset or parquet) into shards.

    Shards hold whole loader batches (``samples_per_shard`` rounded up to a batch). A killed run
    resumes after its last complete shard when called again with the same arguments. Returns the
    summary also written to ``{output_dir}/{shard_prefix}-cache.json``: samples, shards, skipped
    samples by reason, seconds, and the layout.

    Example:
        >>> source = WebDatasetSource("/data/datacomp/{00000..01286}.tar")   # theworld.data.webdataset
        >>> write_latent_cache(TheWorldConfig(), source, "/data/datacomp-latents/train")
    """
    from torchdata.stateful_dataloader import StatefulDataLoader

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    progress = _Progress(output_dir, shard_prefix)
    settings = {"dtype": dtype, **layout(config)}
    state = _resume_point(output_dir, shard_prefix, progress)
    if state.get("settings", settings) != settings:
        raise LatentCacheError(
            f"{output_dir} holds an unfinished cache made with {state['settings']}, not {settings}: resume it with "
            "the same settings, or write this one to another folder."
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = (
        WorldEncoder.from_pretrained(
            config.cosmos_model_name,
            config.cosmos_subfolder,
            config.world_patch_size,
            dtype=resolve_dtype(config.frozen_dtype),
        )
        .to(device)
        .eval()
    )
    world_input = _WorldInput(config.world_image_size)
    source.transform = world_input
    loader = StatefulDataLoader(
        source,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        **worker_options(num_workers),
    )
    if state["loader"] is not None:
        loader.load_state_dict(state["loader"])
    writer = _ShardWriter(output_dir, shard_prefix, state["shards"])
    skipped: Counter[str] = Counter(state["skipped"])
    samples, start = state["samples"], time.perf_counter() - state["seconds"]

    def checkpoint() -> None:
        writer.close()
        progress.save(
            {
                "loader": loader.state_dict(),
                "samples": samples,
                "skipped": dict(skipped),
                "shards": writer.shards,
                "seconds": time.perf_counter() - start,
                "settings": settings,
            }
        )

    with torch.inference_mode():
        for batch in loader:
            if limit is not None and samples >= limit:
                break
            pixels = world_input.pixels.normalize(batch["world_pixels"].to(device, non_blocking=True))
            tokens = encoder(pixels).to(STORAGE_DTYPES[dtype]).cpu()
            for i, key in enumerate(batch["key"][: None if limit is None else limit - samples]):
                members = {
                    batch["image_ext"][i]: batch["image_bytes"][i],
                    "txt": batch["text"][i].encode(),
                    WORLD_LATENTS_EXT: pack_world_latents(tokens[i], config),
                }
                if batch["prompt"][i] is not None:  # a question: its prompt (choices included) and answer, as read
                    members["json"] = json.dumps({"question": batch["prompt"][i], "answer": batch["text"][i]}).encode()
                writer.add(key, members)
                samples += 1
            for counts in batch["skipped"]:
                skipped.update(counts)
            if writer.count >= samples_per_shard:
                checkpoint()
    writer.close()
    summary = {
        "samples": samples,
        "shards": writer.shards,
        "skipped": dict(skipped),
        "seconds": round(time.perf_counter() - start, 2),
        **settings,
    }
    (output_dir / f"{shard_prefix}-cache.json").write_text(json.dumps(summary, indent=2) + "\n")
    progress.path.unlink(missing_ok=True)
    return summary
