"""Writes everything ``configs/demo.yaml`` and ``configs/demo_spatial.yaml`` read: tiny Gemma 3, tiny Cosmos VAE,
synthetic caption shards, spatial question-answer shards and the spatial benchmark (BLINK's schema).

Usage::

    python -m theworld.testing.demo_assets            # -> demo_assets/
    theworld fit --config configs/demo.yaml           # captions
    theworld fit --config configs/demo_spatial.yaml   # captions + spatial questions, world tokens only
"""

from __future__ import annotations

import argparse
from pathlib import Path

from theworld.testing.spatial import write_spatial_benchmark, write_spatial_shards
from theworld.testing.synthetic import write_webdataset_shards
from theworld.testing.tiny import write_tiny_cosmos, write_tiny_gemma


def write_demo_assets(
    out_dir: str | Path = "demo_assets", train_shards: int = 16, samples_per_shard: int = 1024, seed: int = 0
) -> Path:
    """Tiny models and one epoch of configs/demo.yaml's data (1000 steps x 16), plus a 64-image held-out shard;
    spatial question shards for configs/demo_spatial.yaml and the spatial benchmark, each from a seed of its own."""
    out_dir = Path(out_dir)
    write_tiny_gemma(out_dir / "gemma-3-tiny", seed=seed)
    write_tiny_cosmos(out_dir / "cosmos-tiny", seed=seed)
    write_webdataset_shards(out_dir / "data", train_shards, samples_per_shard, seed=seed, prefix="train")
    # A held-out shard with its own seed: never overlaps the training stream.
    write_webdataset_shards(out_dir / "data", 1, 64, seed=seed + 1000, prefix="val")
    held_out = write_spatial_benchmark(out_dir / "spatial_bench", questions_per_task=300, seed=seed + 2000)
    write_spatial_shards(out_dir / "spatial", 8, 1024, seed=seed + 3000, prefix="train", held_out=held_out)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", default="demo_assets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"demo assets written to {write_demo_assets(args.out_dir, seed=args.seed)}/")


if __name__ == "__main__":
    main()
