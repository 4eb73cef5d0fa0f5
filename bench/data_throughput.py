"""Data-loading speed at real size: 256-px JPEGs in webdataset shards to model-ready batches.

The processor has Gemma 3's real image settings -- SigLIP pixels at 896 px, 256 image tokens --
from a tiny Gemma 3 written locally (nothing is downloaded), plus the VAE input at 448 px (784
world tokens at world_patch_size 2). Timed in one run:

- ``samples_per_s_per_worker``: one DataLoader worker (one thread, as every worker) runs the real
  ``WebDatasetSource`` + ``SampleTransform`` + ``collate`` over ``--samples`` samples and ships the
  batches to the main process, which only takes them; samples per CPU-second of that worker, i.e.
  what one dedicated core delivers (``wall_samples_per_s_one_worker`` is the wall-clock rate);
- ``main_process_data_s_per_step``: the training loop's wait for data per step, when the
  datamodule's ``StatefulDataLoader`` with 2 workers feeds a consumer whose "step" is a fixed sleep;
- ``cached_samples_per_s_per_worker``: the same per-worker rate from latent-cache shards of the same
  samples (``theworld.latent_cache``, made here with a tiny VAE of the real Wan layout: 784 tokens x
  64 channels in bf16), where each sample's world tokens are read instead of its 448-px VAE input made.
- ``url_samples_per_s_per_worker_rules_off`` / ``_on``: DataComp's parquet source (``--url-samples`` rows,
  images downloaded from a local HTTP server, one face box each) with ``data.blur_faces`` and
  ``data.verify_sha256`` off, then on: what DataComp's own rules cost a worker.

The loader's pixels are uint8; ``TheWorldDataModule.on_after_batch_transfer`` turns them into the
model's float inputs on the GPU, which is not timed here.

Prints JSON lines; the last is ``{"samples_per_s_per_worker", "main_process_data_s_per_step", ...}``
(goal: >= 50 samples/s per worker on one core).

    python bench/data_throughput.py [--samples 512] [--step-s 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from theworld.config import TheWorldConfig
from theworld.data.parquet import ParquetURLSource
from theworld.data.processing import TheWorldProcessor, load_gemma_processor
from theworld.data.webdataset import WebDatasetSource
from theworld.latent_cache import write_latent_cache
from theworld.lit.datamodule import SampleTransform, TheWorldDataModule
from theworld.testing.http import serve_directory
from theworld.testing.synthetic import good_row, write_rows, write_webdataset_shards
from theworld.testing.tiny import write_tiny_cosmos, write_tiny_gemma

SIGLIP_SIZE, SIGLIP_PATCH, IMAGE_TOKENS = 896, 14, 256  # Gemma 3 4B
WORLD_IMAGE_SIZE, WORLD_PATCH = 448, 2
WORLD_TOKENS = (WORLD_IMAGE_SIZE // 8 // WORLD_PATCH) ** 2  # the Wan VAE downsamples 8x: 784
WARMUP_STEPS = 4


def worker_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far (/proc; 0 for one already gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return total / os.sysconf("SC_CLK_TCK")


def per_worker_throughput(loader) -> tuple[float, float]:
    """``(samples per CPU-second of the worker, samples per wall-second)`` of a one-worker loader drained to its end.

    The worker's CPU time (read from /proc after each batch: workers are the forkserver's children, not ours)
    says what one dedicated core delivers, however busy the machine is; the wall-clock rate also counts time the
    worker waited for a core.
    """
    start = time.perf_counter()
    batches = StatefulDataLoader.__iter__(loader)  # the loader's own iterator (theworld's adds bookkeeping only)
    pids = [worker.pid for worker in batches._workers]
    count, cpu = 0, 0.0
    for batch in batches:
        count += len(batch["key"])
        cpu = max(cpu, worker_cpu_seconds(pids))
    wall = time.perf_counter() - start
    return count / cpu, count / wall


def datacomp_rules(tmp: Path, samples: int, rounds: int, batch_size: int, processor, config) -> dict[str, float]:
    """Samples per worker CPU-second of the DataComp source (parquet rows, 256 px images over HTTP on
    127.0.0.1, one face box each) with ``blur_faces`` and ``verify_sha256`` off and on, alternating, best of
    ``rounds``."""
    images = tmp / "url-images"
    images.mkdir()
    url, stop = serve_directory(images)
    rows = [good_row(1, i, 256, url, images) | {"face_bboxes": [[0.3, 0.25, 0.6, 0.65]]} for i in range(samples)]
    write_rows(rows, tmp / "meta.parquet")
    rates: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for _ in range(rounds):
            for name, on in (("off", False), ("on", True)):
                source = ParquetURLSource(str(tmp / "meta.parquet"), transform=SampleTransform(processor, config),
                                          blur_faces=on, verify_sha256=on, download_threads=4)
                datamodule = TheWorldDataModule(batch_size=batch_size, num_workers=1)
                datamodule.processor = processor
                rates[name].append(per_worker_throughput(datamodule._loader(source, batch_size))[0])
    finally:
        stop()
    return {name: round(max(values), 1) for name, values in rates.items()}


def main_process_wait(loader, steps: int, warmup: int, step_s: float) -> list[float]:
    """Seconds the consumer waits in ``next(loader)`` for each step after ``warmup`` steps."""
    waits = []
    batches = iter(loader)
    for step in range(warmup + steps):
        start = time.perf_counter()
        next(batches)
        if step >= warmup:
            waits.append(time.perf_counter() - start)
        time.sleep(step_s)  # the training step
    return waits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=512, help="samples timed for the per-worker throughput")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--step-s", type=float, default=0.25, help="simulated training step")
    parser.add_argument("--steps", type=int, default=40, help="steps timed with the 2-worker loader")
    parser.add_argument("--url-samples", type=int, default=256,
                        help="DataComp rows (images over HTTP) timed with face blurring + sha256 checks off and on")
    parser.add_argument("--rounds", type=int, default=2, help="alternating off/on rounds of that comparison")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gemma = write_tiny_gemma(tmp / "gemma", image_size=SIGLIP_SIZE, patch_size=SIGLIP_PATCH,
                                 mm_tokens_per_image=IMAGE_TOKENS)
        processor = TheWorldProcessor(load_gemma_processor(gemma), WORLD_TOKENS, WORLD_IMAGE_SIZE)
        needed = max(args.samples, (WARMUP_STEPS + args.steps) * args.batch_size)
        shards = write_webdataset_shards(tmp / "shards", 4, -(-needed // 4), image_size=256)

        config = TheWorldConfig(gemma_model_name=gemma, cosmos_model_name=write_tiny_cosmos(tmp / "cosmos"),
                                world_image_size=WORLD_IMAGE_SIZE, world_patch_size=WORLD_PATCH)
        cache = tmp / "latents"
        write_latent_cache(config, WebDatasetSource(shards), cache, batch_size=16, num_workers=2,
                           samples_per_shard=-(-needed // 4))

        def loader(num_workers: int, num_samples: int | None = None, data=shards):
            """The loader `theworld fit` trains from."""
            source = WebDatasetSource(data, transform=SampleTransform(processor, config), num_samples=num_samples)
            datamodule = TheWorldDataModule(batch_size=args.batch_size, num_workers=num_workers)
            datamodule.processor = processor
            return datamodule._loader(source, args.batch_size)

        batch = next(iter(loader(0)))
        print(json.dumps({"loader_batch": {key: [list(value.shape), str(value.dtype)] for key, value in batch.items()
                                           if isinstance(value, torch.Tensor)}}))

        per_worker, per_worker_wall = per_worker_throughput(loader(1, args.samples))
        print(json.dumps({"samples_per_s_per_worker": round(per_worker, 1),
                          "wall_samples_per_s_one_worker": round(per_worker_wall, 1)}))
        cached, _ = per_worker_throughput(loader(1, args.samples, data=str(cache)))
        print(json.dumps({"cached_samples_per_s_per_worker": round(cached, 1)}))

        rules = datacomp_rules(tmp, args.url_samples, args.rounds, args.batch_size, processor, config)
        print(json.dumps({"datacomp_rules": rules}))

        waits = main_process_wait(loader(2), args.steps, WARMUP_STEPS, args.step_s)
        print(json.dumps({"main_process_waits_s": [round(w, 4) for w in waits]}))
        print(json.dumps({
            "samples_per_s_per_worker": round(per_worker, 1),
            "wall_samples_per_s_one_worker": round(per_worker_wall, 1),
            "main_process_data_s_per_step": round(statistics.mean(waits), 4),
            "cached_samples_per_s_per_worker": round(cached, 1),
            "url_samples_per_s_per_worker_rules_off": rules["off"],
            "url_samples_per_s_per_worker_rules_on": rules["on"],
            "batch_size": args.batch_size, "step_s": args.step_s, "workers": 2,
            "siglip_px": SIGLIP_SIZE, "world_px": WORLD_IMAGE_SIZE,
        }))


if __name__ == "__main__":
    main()
