"""Questions per second of ``theworld evaluate`` on the CPU, per condition and batch size.

The demo's model (tiny Gemma 3 + tiny Cosmos VAE in the real formats, ``configs/demo.yaml``'s world layout) answers
``--questions`` two-option questions about synthetic images, built in memory (the benchmark reader is not timed).
Each JSON line: ``{"condition", "batch_size", "questions", "seconds", "questions_per_second"}``.

    python bench/evaluate_throughput.py [--questions 128] [--batch_sizes 1 8 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from theworld import TheWorld
from theworld.benchmarks import Benchmark, Question
from theworld.evaluate import check_conditions, evaluate_benchmarks, gemma_baseline
from theworld.prompts import multiple_choice_prompt, option_letters
from theworld.testing.tiny import write_tiny_cosmos, write_tiny_gemma


def questions(count: int) -> list[Question]:
    choices = ["the left one", "the right one"]
    return [Question(str(n), "Size", None, (Image.new("RGB", (96, 96), (n * 37 % 256, n * 91 % 256, 120)),),
                     multiple_choice_prompt("Which shape is larger?", choices), option_letters(2), ["(A)"], "Size")
            for n in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        gemma, cosmos = write_tiny_gemma(Path(root) / "gemma"), write_tiny_cosmos(Path(root) / "cosmos")
        model = TheWorld(gemma, cosmos, world_image_size=64, world_patch_size=2, projector_hidden_dim=256).eval()
        baseline = gemma_baseline(model)
        bench = Benchmark("synthetic", "Size", "test", "blink", questions(args.questions))
        warm_up = Benchmark("synthetic", "Size", "test", "blink", questions(4))  # first-call costs, untimed
        evaluate_benchmarks(model, [warm_up], baseline=lambda: baseline, bootstrap_samples=10)
        for condition in check_conditions(None, True, [bench]):  # the defaults: no trained control here
            for batch_size in args.batch_sizes:
                start = time.perf_counter()
                evaluate_benchmarks(model, [bench], [condition], baseline=lambda: baseline, batch_size=batch_size,
                                    bootstrap_samples=100)
                seconds = time.perf_counter() - start
                print(json.dumps({"condition": condition, "batch_size": batch_size, "questions": args.questions,
                                  "seconds": round(seconds, 3),
                                  "questions_per_second": round(args.questions / seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
