"""A synthetic spatial benchmark that matches the demo world: two shapes in one image, a multiple-choice question
about where they are or which is larger, in BLINK's exact schema; and question-answer training shards of the same
kind (another seed: never the benchmark's images).

The shapes are big and sit in clearly different halves of the 64 px image, so that the demo's 4x4 world tokens
(an 8x8 latent grid, patches of 2) can carry the answer. Every question has two choices and the right one is
``(A)`` for exactly half of each task's questions: a blind guess scores 50%.

Layout of the benchmark (what ``datasets.load_dataset(root, task, split="val")`` reads)::

    <root>/README.md                              YAML configs: one per task, its data_files
    <root>/<task>/val-00000-of-00001.parquet      idx, question, sub_task, image_1..image_4, choices, answer,
                                                  prompt, explanation

Example:
    >>> write_spatial_benchmark("demo_assets/spatial_bench", questions_per_task=300, seed=2000)  # doctest: +SKIP
    >>> write_spatial_shards("demo_assets/spatial", num_shards=4, samples_per_shard=1024, seed=3000)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from theworld.data.webdataset import shard_writer
from theworld.demo_grammar import COLORS, SHAPES, contrasting
from theworld.prompts import multiple_choice_prompt, option_letters
from theworld.testing.synthetic import _polygon, encode_image, make_key

# The benchmark's tasks (its configs and sub_task values) and the question each asks.
QUESTIONS = {
    "Larger": "Which shape is larger?",
    "Left": "Which shape is on the left?",
    "Top": "Which shape is nearer the top?",
}
TASKS = tuple(QUESTIONS)


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
    """Draws two shapes for ``task`` so that choice ``answer`` (0 or 1) is the right one."""
    background = rng.choice(list(COLORS))
    first = rng.choice(contrasting(background))
    second = rng.choice([c for c in contrasting(background) if c != first and c in contrasting(first)]
                        or [c for c in contrasting(background) if c != first])
    shapes = [rng.choice(SHAPES), rng.choice(SHAPES)]
    names = [f"the {first} {shapes[0]}", f"the {second} {shapes[1]}"]
    # Shape 0 goes to the left (or top) half; the other half holds shape 1.
    near, far = rng.uniform(0.22, 0.28) * size, rng.uniform(0.72, 0.78) * size
    across = [rng.uniform(0.4, 0.6) * size for _ in range(2)]
    if task == "Larger":
        radii = [rng.uniform(0.19, 0.22) * size, rng.uniform(0.08, 0.10) * size]
        if answer == 1:
            radii.reverse()
        choices = ["the left one", "the right one"]
        explanation = f"The {choices[answer].removeprefix('the ')} is about twice the size of the other."
        centres = [(near, across[0]), (far, across[1])]
    else:
        radii = [rng.uniform(0.16, 0.19) * size for _ in range(2)]
        centres = [(near, across[0]), (far, across[1])] if task == "Left" else [(across[0], near), (across[1], far)]
        choices = names if answer == 0 else names[::-1]  # shape 0 is the right one
        side = "left" if task == "Left" else "top"
        explanation = f"{names[0].capitalize()} is in the {side} half of the image, {names[1]} in the other."
    image = Image.new("RGB", (size, size), COLORS[background])
    draw = ImageDraw.Draw(image)
    for shape, color, (cx, cy), r in zip(shapes, (first, second), centres, radii):
        _draw(draw, shape, color, cx, cy, r)
    return SpatialQuestion(task, image, QUESTIONS[task], choices, answer, explanation)


def spatial_questions(task: str, count: int, seed: int, size: int = 64) -> list[SpatialQuestion]:
    """``count`` questions of ``task``, the right answer ``(A)`` for exactly half of them (in a seeded order)."""
    answers = [index % 2 for index in range(count)]
    random.Random(f"{seed}:{task}:answers").shuffle(answers)
    return [spatial_question(task, answer, random.Random(f"{seed}:{task}:{index}"), size)
            for index, answer in enumerate(answers)]


def write_spatial_benchmark(root: str | Path, questions_per_task: int = 300, seed: int = 2000,
                            size: int = 64) -> Path:
    """The benchmark as a Hub-style dataset folder in BLINK's schema (one config per task, split ``val``)."""
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    root = Path(root)
    features = Features({
        "idx": Value("string"), "question": Value("string"), "sub_task": Value("string"),
        **{f"image_{n}": ImageFeature() for n in range(1, 5)},
        "choices": Sequence(Value("string")), "answer": Value("string"), "prompt": Value("string"),
        "explanation": Value("string"),
    })
    card = ["---", "configs:"]
    for task in TASKS:
        rows = [{"idx": f"val_{task}_{index + 1}", "question": q.question, "sub_task": task, "image_1": q.image,
                 "image_2": None, "image_3": None, "image_4": None, "choices": q.choices, "answer": q.answer_letter,
                 "prompt": q.prompt, "explanation": q.explanation}
                for index, q in enumerate(spatial_questions(task, questions_per_task, seed, size))]
        (root / task).mkdir(parents=True, exist_ok=True)
        Dataset.from_list(rows, features=features).to_parquet(str(root / task / "val-00000-of-00001.parquet"))
        card += [f"- config_name: {task}", "  data_files:", "  - split: val", f"    path: {task}/val-*"]
    card += ["---", "", "Two shapes in one image, a two-choice question about them (TheWorld's demo world, BLINK's "
             "schema). Generated by `python -m theworld.testing.demo_assets`; answers are (A) for half of each task.",
             ""]
    (root / "README.md").write_text("\n".join(card))
    return root


def write_spatial_shards(out_dir: str | Path, num_shards: int, samples_per_shard: int, seed: int = 3000,
                         size: int = 64, prefix: str = "spatial") -> list[str]:
    """Question-answer training shards: ``{key}.jpg`` and ``{key}.json`` with ``question``, ``choices`` and
    ``answer`` (the letter), the tasks taking turns."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = num_shards * samples_per_shard
    questions = {task: iter(spatial_questions(task, -(-total // len(TASKS)), seed, size)) for task in TASKS}
    paths = []
    for shard in range(num_shards):
        path = out / f"{prefix}-{shard:05d}.tar"
        with shard_writer(str(path)) as writer:
            for index in range(shard * samples_per_shard, (shard + 1) * samples_per_shard):
                q = next(questions[TASKS[index % len(TASKS)]])
                meta = {"question": q.question, "choices": q.choices, "answer": q.answer_letter, "sub_task": q.task}
                writer.write({"__key__": make_key(index), "jpg": encode_image(q.image),
                              "json": json.dumps(meta).encode()})
        paths.append(str(path))
    return paths
