"""Benchmarks as tiny local folders laid out like their Hub repos (BLINK, CV-Bench, plain VQA): parquet files with
the published columns and types, and a README.md listing the configs."""

from collections import defaultdict

from datasets import Dataset, Features, Sequence, Value
from datasets import Image as ImageFeature
from PIL import Image

from theworld.prompts import multiple_choice_prompt

# Column names and types as the datasets' cards give them (BLINK-Benchmark/BLINK, nyu-visionx/CV-Bench).
BLINK_FEATURES = Features({
    "idx": Value("string"), "question": Value("string"), "sub_task": Value("string"),
    "image_1": ImageFeature(), "image_2": ImageFeature(), "image_3": ImageFeature(), "image_4": ImageFeature(),
    "choices": Sequence(Value("string")), "answer": Value("string"), "prompt": Value("string"),
    "explanation": Value("string"),
})
CV_BENCH_FEATURES = Features({
    "idx": Value("int32"), "type": Value("string"), "task": Value("string"), "image": ImageFeature(),
    "question": Value("string"), "choices": Sequence(Value("string")), "answer": Value("string"),
    "prompt": Value("string"), "filename": Value("string"), "source": Value("string"),
    "source_dataset": Value("string"), "source_filename": Value("string"), "target_class": Value("string"),
    "target_size": Value("int64"), "bbox": Sequence(Sequence(Value("float32"))),
})
VQA_FEATURES = Features({"image": ImageFeature(), "question": Value("string"), "answer": Value("string")})
IMAGE_COLUMNS = ("image_1", "image_2", "image_3", "image_4")
COLOURS = [(230, 20, 20), (20, 200, 40), (30, 30, 230), (240, 220, 10), (200, 0, 200), (0, 200, 200)]


def picture(number: int) -> Image.Image:
    """A distinct image per number below 30: a colour, and a bar whose place moves."""
    image = Image.new("RGB", (48, 40), COLOURS[number % len(COLOURS)])
    image.paste((255, 255, 255), (4 * number % 40, 8, 4 * number % 40 + 6, 30))
    return image


def write_hub_folder(root, split: str, configs: dict[str, tuple[list[dict], Features]]):
    """``<root>/<Config>/<split>-00000-of-00001.parquet`` and a README.md whose front matter lists the configs: the
    layout of a dataset on the Hub."""
    return write_hub_splits(root, {config: {split: table} for config, table in configs.items()})


def write_hub_splits(root, configs: dict[str, dict[str, tuple[list[dict], Features]]]):
    """As ``write_hub_folder``, several splits per config (BLINK: ``val`` and ``test``)."""
    card = ["---", "configs:"]
    for config, splits in configs.items():
        (root / config).mkdir(parents=True)
        card += [f"- config_name: {config}", "  data_files:"]
        for split, (rows, features) in splits.items():
            path = root / config / f"{split}-00000-of-00001.parquet"
            Dataset.from_list(rows, features=features).to_parquet(str(path))
            card += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (root / "README.md").write_text("\n".join([*card, "---", ""]))
    return root


def blink_rows(task: str, count: int, multi_image: int = 0, images: int = 2) -> list[dict]:
    """``count`` one-image questions, then ``multi_image`` questions of ``images`` images each (image_1.. filled in
    order, as BLINK's multi-image tasks have them); every image a different picture (under 10 rows of 3 images)."""
    rows = []
    for number in range(count + multi_image):
        question = f"Which point is closer to the camera ({number})?" if number % 2 else "Is the bar left?"
        shown = [picture(number + 10 * place) for place in range(images if number >= count else 1)]
        rows.append({
            "idx": f"val_{task}_{number + 1}", "question": question, "sub_task": task.replace("_", " "),
            **{column: shown[place] if place < len(shown) else None for place, column in enumerate(IMAGE_COLUMNS)},
            "choices": ["A is closer", "B is closer"], "answer": "(A)" if number % 2 else "(B)", "explanation": "",
            "prompt": multiple_choice_prompt(question, ["A is closer", "B is closer"]),
        })
    return rows


def blink_folder(root, count=4, multi_image=1):
    return write_hub_folder(root, "val", {
        "Relative_Depth": (blink_rows("Relative_Depth", count, multi_image), BLINK_FEATURES),
        "Spatial_Relation": (blink_rows("Spatial_Relation", count), BLINK_FEATURES),
    })


def blink_test_rows(task: str, count: int, multi_image: int = 0, images: int = 2) -> list[dict]:
    """BLINK's test split: the same columns, the answers withheld."""
    return [{**row, "idx": f"test_{task}_{n + 1}", "answer": "hidden"}
            for n, row in enumerate(blink_rows(task, count, multi_image, images))]


def cv_bench_row(idx: int, kind: str, task: str, source: str, answer: str = "(A)") -> dict:
    choices = ["lamp", "chair"] if kind == "3D" else ["3", "2", "1", "0"]
    question = "Which object is closer to the camera?" if kind == "3D" else f"How many {task.lower()}s are there?"
    return {"idx": idx, "type": kind, "task": task, "image": picture(idx), "question": question, "choices": choices,
            "answer": answer, "prompt": multiple_choice_prompt(question, choices), "filename": f"img/{kind}/{idx}.png",
            "source": source, "source_dataset": {"Omni3D": "SUNRGBD"}.get(source, source),
            "source_filename": f"{idx}.jpg", "target_class": None, "target_size": None,
            "bbox": [[1.0, 2.0, 3.0, 4.0]]}


def cv_bench_folder(root, rows_2d: list[dict], rows_3d: list[dict]):
    """nyu-visionx/CV-Bench's layout: ``test_2d.parquet`` and ``test_3d.parquet`` at the top, and three configs:
    ``2D``, ``3D`` and ``default``, whose ``test*.parquet`` holds both again."""
    root.mkdir(parents=True)
    Dataset.from_list(rows_2d, features=CV_BENCH_FEATURES).to_parquet(str(root / "test_2d.parquet"))
    Dataset.from_list(rows_3d, features=CV_BENCH_FEATURES).to_parquet(str(root / "test_3d.parquet"))
    card = ["---", "configs:"]
    for config, pattern in (("default", "test*.parquet"), ("2D", "test_2d.parquet"), ("3D", "test_3d.parquet")):
        card += [f"- config_name: {config}", "  data_files:", "  - split: test", f'    path: "{pattern}"']
    (root / "README.md").write_text("\n".join([*card, "---", ""]))
    return root


def write_config(tmp_path, tiny_models):
    """``tmp_path/tiny.yaml``: a `theworld evaluate` config of the tiny models, its run folder in ``tmp_path``."""
    gemma, cosmos = tiny_models
    config = tmp_path / "tiny.yaml"
    config.write_text(f"""seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  precision: 32-true
  default_root_dir: {tmp_path / "run"}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {tmp_path / "run"}, name: logs}}
model:
  gemma_model_name: {gemma}
  cosmos_model_name: {cosmos}
  world_image_size: 64
""")
    return config


def hand_total(samples, condition, weights):
    """The official total recomputed from the JSON's answers: each stratum's share right, weighted."""
    right = defaultdict(list)
    for sample in samples:
        if sample["condition"] == condition:
            right[sample["stratum"]].append(sample["correct"])
    assert set(right) == set(weights)
    return sum(weights[stratum] * sum(values) / len(values) for stratum, values in right.items())
