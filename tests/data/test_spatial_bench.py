"""The demo's spatial benchmark: read by `datasets.load_dataset` as BLINK is, balanced answers that are right about
the image, and training questions that never show a benchmark image."""

import hashlib
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
from datasets import Image, List, Value, load_dataset

from theworld.prompts import multiple_choice_prompt
from theworld.testing.spatial import TASKS, image_digest, write_spatial_benchmark, write_spatial_shards

# BLINK-Benchmark/BLINK's columns and types, from its dataset card.
BLINK = {"idx": Value("string"), "question": Value("string"), "sub_task": Value("string"),
         **{f"image_{n}": Image() for n in range(1, 5)}, "choices": List(Value("string")),
         "answer": Value("string"), "prompt": Value("string"), "explanation": Value("string")}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "spatial_bench"
    return root, write_spatial_benchmark(root, questions_per_task=40)


def bench_rows(bench, task):
    # A cache of this test's own: `datasets` keys its cache by the folder's name and config, not by the files.
    return load_dataset(str(bench), task, split="val", cache_dir=str(bench.parent / "datasets-cache"))


def shape_pixels(image, box):
    """Pixels of ``box`` that are not the background (the top-left pixel's colour)."""
    pixels = np.asarray(image.crop(box))
    return int((pixels != np.asarray(image)[0, 0]).any(-1).sum())


def right_about_the_image(row) -> bool:
    """The answer names the half of the image that holds the shape (all of it, or nearly)."""
    image, chosen = row["image_1"], row["choices"]["AB".index(row["answer"][1])]
    halves = {"Left": {"the left half": (0, 0, 32, 64), "the right half": (32, 0, 64, 64)},
              "Top": {"the top half": (0, 0, 64, 32), "the bottom half": (0, 32, 64, 64)}}[row["sub_task"]]
    inside = {name: shape_pixels(image, box) for name, box in halves.items()}
    return inside[chosen] > 10 * max(inside[name] for name in halves if name != chosen)


def test_the_benchmark_loads_as_blink_does_with_balanced_right_answers(bench):
    bench, _ = bench
    for task in TASKS:
        rows = bench_rows(bench, task)
        assert rows.features == BLINK
        assert len(rows) == 40 and len(set(rows["idx"])) == 40
        assert Counter(rows["answer"]) == {"(A)": 20, "(B)": 20}, "a blind guess scores 50%"
        for row in rows:
            assert row["sub_task"] == task and row["image_2"] is None and len(row["choices"]) == 2
            assert row["prompt"] == multiple_choice_prompt(row["question"], row["choices"])
            assert right_about_the_image(row), row["idx"]


def shard_members(shard) -> dict[str, bytes]:
    with tarfile.open(shard) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_training_questions_never_show_a_benchmark_image(bench, tmp_path):
    bench, held_out = bench
    # As demo_assets writes them: the benchmark's pictures held out (a shape rasterises alike at nearby places).
    (shard,) = write_spatial_shards(tmp_path, num_shards=1, samples_per_shard=600, held_out=held_out)
    bench_images = {image_digest(row["image_1"].convert("RGB")) for task in TASKS for row in bench_rows(bench, task)}
    assert bench_images == held_out
    members = shard_members(shard)
    metas = [json.loads(data) for name, data in members.items() if name.endswith(".json")]
    assert Counter(meta["sub_task"] for meta in metas) == {task: 600 // len(TASKS) for task in TASKS}
    assert all(meta["answer"] in ("(A)", "(B)") and len(meta["choices"]) == 2 for meta in metas)
    trained = {hashlib.sha256(data).hexdigest() for name, data in members.items() if name.endswith(".jpg")}
    assert len(trained) > 100 and not trained & bench_images


def test_held_out_pictures_are_never_written(tmp_path):
    """What the check above relies on: pictures the training stream would show are left out when held out."""
    (plain,) = write_spatial_shards(tmp_path / "plain", num_shards=1, samples_per_shard=40)
    shown = {hashlib.sha256(data).hexdigest() for name, data in shard_members(plain).items() if name.endswith(".jpg")}
    held_out = set(sorted(shown)[:10])
    (kept,) = write_spatial_shards(tmp_path / "kept", num_shards=1, samples_per_shard=40, held_out=held_out)
    written = {hashlib.sha256(data).hexdigest() for name, data in shard_members(kept).items() if name.endswith(".jpg")}
    assert len(shard_members(kept)) == 80 and not written & held_out
