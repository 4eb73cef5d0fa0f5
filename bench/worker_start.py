"""How long loader workers take to start: the forkserver theworld uses against forking from the trainer.

A 2-worker loader as ``theworld fit`` builds it (the tiny Gemma 3's processor, 256 px shards) is started several
times, as validation does at each check; the time from ``iter(loader)`` to the first batch is printed for:
``fork`` (what theworld did before: fast, but a worker inherits any lock another thread of the trainer holds),
``forkserver_first`` (the first loader of a run: the forkserver starts and imports torch and the data code once)
and ``forkserver`` (every later loader). Workers start once per loader, never per step.

    python bench/worker_start.py [--starts 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from theworld.data.processing import TheWorldProcessor, load_gemma_processor
from theworld.data.webdataset import WebDatasetSource
from theworld.lit.datamodule import SampleTransform, TheWorldDataModule
from theworld.testing.synthetic import write_webdataset_shards
from theworld.testing.tiny import write_tiny_gemma


def first_batch_s(datamodule: TheWorldDataModule, source, start_method: str | None) -> float:
    loader = datamodule._loader(source, 8)
    if start_method == "fork":
        loader.multiprocessing_context = "fork"
    start = time.perf_counter()
    next(iter(loader))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=5, help="loaders started per start method")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        processor = TheWorldProcessor(load_gemma_processor(write_tiny_gemma(tmp / "gemma")), 784, 448)
        shards = write_webdataset_shards(tmp / "shards", 2, 16, image_size=256)
        source = WebDatasetSource(shards, transform=SampleTransform(processor))
        datamodule = TheWorldDataModule(batch_size=8, num_workers=2)
        datamodule.processor = processor
        forkserver_first = first_batch_s(datamodule, source, None)
        forkserver = [first_batch_s(datamodule, source, None) for _ in range(args.starts)]
        fork = [first_batch_s(datamodule, source, "fork") for _ in range(args.starts)]
    summary = {"forkserver_first_s": round(forkserver_first, 3),
               "forkserver_median_s": round(statistics.median(forkserver), 3),
               "fork_median_s": round(statistics.median(fork), 3), "workers": 2, "starts": args.starts}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
