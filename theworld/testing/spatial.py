"""A synthetic spatial benchmark that matches the demo world: a shape in one image, a multiple-choice question
about where it is, in BLINK's exact schema; and question-answer training shards of the same kind
(another seed: never the benchmark's images).

The shape sits clearly in one half of the 64 px image, so that the demo's 4x4 world
tokens (an 8x8 latent grid, patches of 2) can carry the answer. Every question has two choices and the right one is
``(A)`` for exactly half of each task's questions: a blind guess scores 50%.

Layout of the benchmark (what ``datasets.load_dataset(root, task, split="val")`` reads)::

    <root>/README.md                              YAML configs: one per task, its data_files
    <root>/<task>/val-00000-of-00001.parquet      idx, question, sub_task, image_1..image_4, choices, answer,
                                                  prompt, explanation

Example:
    >>> bench = "demo_assets/spatial_bench"
    >>> held_out = write_spatial_benchmark(bench, questions_per_task=300, seed=2000)  # doctest: +SKIP
    >>> write_spatial_shards("demo_assets/spatial", 4, 1024, seed=3000, held_out=held_out)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from theworld.data.webdataset import shard_writer
from theworld.demo_grammar import COLORS, SHAPES
from theworld.prompts import multiple_choice_prompt, option_letters
from theworld.testing.synthetic import _polygon, encode_image, make_key

# The benchmark's tasks (its configs and sub_task values), the question each asks and its two choices, always in this
# order: a blind guess scores 50% (the answers are balanced), a model must read the image to do better.
QUESTIONS = {
    "Left": ("Which half of the image is the shape in?", ["the left half", "the right half"]),
    "Top": ("Is the shape in the top half or in the bottom half?", ["the top half", "the bottom half"]),
}
TASKS = tuple(QUESTIONS)
# One black shape on white: the questions are about where it is, never about colours. (A "which of two shapes is
# larger" task was not learned by the tiny demo model in the demo's budget, with or without world position
# embeddings; where one shape is, is.)
BACKGROUND, SHAPE_COLOR = "white", "black"


@dataclass
class SpatialQuestion:
    """One image with its two-choice question; ``answer`` is the index of the right choice."""

    task: str
    image: Image.Image
    question: str
    choices: list[str]
    answer: int
    explanation: str

    @property
    def prompt(self) -> str:
        return multiple_choice_prompt(self.question, self.choices)

    @property
    def answer_letter(self) -> str:
        return option_letters(len(self.choices))[self.answer]


def _draw(draw: ImageDraw.ImageDraw, shape: str, color: str, cx: float, cy: float, r: float) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLORS[color])
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=COLORS[color])


def spatial_question(task: str, answer: int, rng: random.Random, size: int = 64) -> SpatialQuestion:
    """Draws one shape for ``task`` so that choice ``answer`` (0 or 1) is the right one: its centre in the left /
    top band of the image (answer 0) or in the opposite one, anywhere along the other axis."""
    question, choices = QUESTIONS[task]
    place = (rng.uniform(0.2, 0.3) if answer == 0 else rng.uniform(0.7, 0.8)) * size
    across = rng.uniform(0.3, 0.7) * size
    radius = rng.uniform(0.14, 0.17) * size
    cx, cy = (place, across) if task == "Left" else (across, place)
    explanation = f"The shape's centre is in {choices[answer]} of the image."
    image = Image.new("RGB", (size, size), COLORS[BACKGROUND])
    _draw(ImageDraw.Draw(image), rng.choice(SHAPES), SHAPE_COLOR, cx, cy, radius)
    return SpatialQuestion(task, image, question, list(choices), answer, explanation)


def spatial_questions(task: str, count: int, seed: int, size: int = 64) -> list[SpatialQuestion]:
    """``count`` questions of ``task``, the right answer ``(A)`` for exactly half of them (in a seeded order)."""
    answers = [index % 2 for index in range(count)]
    random.Random(f"{seed}:{task}:answers").shuffle(answers)
    return [
        spatial_question(task, answer, random.Random(f"{seed}:{task}:{index}"), size)
        for index, answer in enumerate(answers)
    ]


def write_spatial_benchmark(
    root: str | Path, questions_per_task: int = 300, seed: int = 2000, size: int = 64
) -> set[str]:
    """The benchmark as a Hub-style dataset folder in BLINK's schema (one config per task, split ``val``); returns its
    images' ``image_digest``s, for ``write_spatial_shards(held_out=...)``."""
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    root = Path(root)
    features = Features(
        {
            "idx": Value("string"),
            "question": Value("string"),
            "sub_task": Value("string"),
            **{f"image_{n}": ImageFeature() for n in range(1, 5)},
            "choices": Sequence(Value("string")),
            "answer": Value("string"),
            "prompt": Value("string"),
            "explanation": Value("string"),
        }
    )
    card, digests = ["---", "configs:"], set[str]()
    for task in TASKS:
        questions = spatial_questions(task, questions_per_task, seed, size)
        digests.update(image_digest(q.image) for q in questions)
        rows = [
            {
                "idx": f"val_{task}_{index + 1}",
                "question": q.question,
                "sub_task": task,
                "image_1": q.image,
                "image_2": None,
                "image_3": None,
                "image_4": None,
                "choices": q.choices,
                "answer": q.answer_letter,
                "prompt": q.prompt,
                "explanation": q.explanation,
            }
            for index, q in enumerate(questions)
        ]
        (root / task).mkdir(parents=True, exist_ok=True)
        Dataset.from_list(rows, features=features).to_parquet(str(root / task / "val-00000-of-00001.parquet"))
        card += [f"- config_name: {task}", "  data_files:", "  - split: val", f"    path: {task}/val-*"]
    card += [
        "---",
        "",
        "A shape in one image, a two-choice question about where it is (TheWorld's demo world, BLINK's "
        "schema). Generated by `python -m theworld.testing.demo_assets`; answers are (A) for half of each task.",
        "",
    ]
    (root / "README.md").write_text("\n".join(card))
    return digests


def image_digest(image: Image.Image) -> str:
    """The hash of the JPEG a shard stores: the same picture drawn twice (a shape rasterises alike at nearby places)
    shares it."""
    return hashlib.sha256(encode_image(image)).hexdigest()


def write_spatial_shards(
    out_dir: str | Path,
    num_shards: int,
    samples_per_shard: int,
    seed: int = 3000,
    size: int = 64,
    prefix: str = "spatial",
    held_out: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Question-answer training shards: ``{key}.jpg`` and ``{key}.json`` with ``question``, ``choices`` and
    ``answer`` (the letter), the tasks taking turns. Images whose ``image_digest`` is in ``held_out`` (the
    benchmark's) are never written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = num_shards * samples_per_shard
    # Twice what is needed, then the held-out pictures left out.
    questions = {
        task: iter(
            [
                q
                for q in spatial_questions(task, 2 * -(-total // len(TASKS)), seed, size)
                if image_digest(q.image) not in held_out
            ]
        )
        for task in TASKS
    }
    paths = []
    for shard in range(num_shards):
        path = out / f"{prefix}-{shard:05d}.tar"
        with shard_writer(str(path)) as writer:
            for index in range(shard * samples_per_shard, (shard + 1) * samples_per_shard):
                q = next(questions[TASKS[index % len(TASKS)]])
                meta = {"question": q.question, "choices": q.choices, "answer": q.answer_letter, "sub_task": q.task}
                writer.write(
                    {"__key__": make_key(index), "jpg": encode_image(q.image), "json": json.dumps(meta).encode()}
                )
        paths.append(str(path))
    return paths
