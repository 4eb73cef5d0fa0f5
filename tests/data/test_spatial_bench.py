"""The demo's spatial benchmark: read by `datasets.load_dataset` as BLINK is, balanced answers that are right about
the image, and training questions that never show a benchmark image."""

import hashlib
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
from datasets import Image, List, Value, load_dataset

from theworld.demo_grammar import COLORS
from theworld.prompts import multiple_choice_prompt
from theworld.testing.spatial import TASKS, write_spatial_benchmark, write_spatial_shards
from theworld.testing.synthetic import encode_image

# BLINK-Benchmark/BLINK's columns and types, from its dataset card.
BLINK = {"idx": Value("string"), "question": Value("string"), "sub_task": Value("string"),
         **{f"image_{n}": Image() for n in range(1, 5)}, "choices": List(Value("string")),
         "answer": Value("string"), "prompt": Value("string"), "explanation": Value("string")}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_spatial_benchmark(tmp_path_factory.mktemp("bench") / "spatial_bench", questions_per_task=40)


def bench_rows(bench, task):
    # A cache of this test's own: `datasets` keys its cache by the folder's name and config, not by the files.
    return load_dataset(str(bench), task, split="val", cache_dir=str(bench.parent / "datasets-cache"))


def pixel_colours(image, box):
    return {rgb for _, rgb in image.crop(box).getcolors(maxcolors=64 * 64)}


def shape_pixels(image, box):
    """Pixels of ``box`` that are not the background (the top-left pixel's colour)."""
    pixels = np.asarray(image.crop(box))
    return int((pixels != np.asarray(image)[0, 0]).any(-1).sum())


def right_about_the_image(row) -> bool:
    """The answer names what the image shows: the larger shape's side, or the colour in the left / top half."""
    image, chosen = row["image_1"], row["choices"]["AB".index(row["answer"][1])]
    if row["sub_task"] == "Larger":
        left, right = shape_pixels(image, (0, 0, 32, 64)), shape_pixels(image, (32, 0, 64, 64))
        return chosen == ("the left one" if left > right else "the right one")
    colour = COLORS[chosen.split()[1]]
    near = (0, 0, 32, 64) if row["sub_task"] == "Left" else (0, 0, 64, 32)
    far = (32, 0, 64, 64) if row["sub_task"] == "Left" else (0, 32, 64, 64)
    return colour in pixel_colours(image, near) and colour not in pixel_colours(image, far)


def test_the_benchmark_loads_as_blink_does_with_balanced_right_answers(bench):
    for task in TASKS:
        rows = bench_rows(bench, task)
        assert rows.features == BLINK
        assert len(rows) == 40 and len(set(rows["idx"])) == 40
        assert Counter(rows["answer"]) == {"(A)": 20, "(B)": 20}, "a blind guess scores 50%"
        for row in rows:
            assert row["sub_task"] == task and row["image_2"] is None and len(row["choices"]) == 2
            assert row["prompt"] == multiple_choice_prompt(row["question"], row["choices"])
            assert right_about_the_image(row), row["idx"]


def test_training_questions_never_show_a_benchmark_image(bench, tmp_path):
    (shard,) = write_spatial_shards(tmp_path, num_shards=1, samples_per_shard=60)
    # Stored lossless, a benchmark image encodes to the very JPEG bytes a training sample of it would hold.
    bench_images = {hashlib.sha256(encode_image(row["image_1"].convert("RGB"))).hexdigest() for task in TASKS
                    for row in bench_rows(bench, task)}
    with tarfile.open(shard) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    metas = [json.loads(data) for name, data in members.items() if name.endswith(".json")]
    assert Counter(meta["sub_task"] for meta in metas) == {task: 20 for task in TASKS}
    assert all(meta["answer"] in ("(A)", "(B)") and len(meta["choices"]) == 2 for meta in metas)
    trained = {hashlib.sha256(data).hexdigest() for name, data in members.items() if name.endswith(".jpg")}
    assert len(trained) == 60 and not trained & bench_images
