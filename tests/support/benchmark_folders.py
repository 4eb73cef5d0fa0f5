"""Benchmarks as tiny local folders laid out like their Hub repos (BLINK, CV-Bench, plain VQA): parquet files with
the published columns and types, and a README.md listing the configs."""

from datasets import Dataset, Features, Sequence, Value
from datasets import Image as ImageFeature
from PIL import Image

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
COLOURS = [(230, 20, 20), (20, 200, 40), (30, 30, 230), (240, 220, 10), (200, 0, 200), (0, 200, 200)]


def picture(number: int) -> Image.Image:
    """A distinct image per number: a colour, and a bar whose place moves."""
    image = Image.new("RGB", (48, 40), COLOURS[number % len(COLOURS)])
    image.paste((255, 255, 255), (4 * number % 40, 8, 4 * number % 40 + 6, 30))
    return image


def write_hub_folder(root, split: str, configs: dict[str, tuple[list[dict], Features]]):
    """``<root>/<Config>/<split>-00000-of-00001.parquet`` and a README.md whose front matter lists the configs: the
    layout of a dataset on the Hub."""
    card = ["---", "configs:"]
    for config, (rows, features) in configs.items():
        (root / config).mkdir(parents=True)
        Dataset.from_list(rows, features=features).to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
        card += [f"- config_name: {config}", "  data_files:", f"  - split: {split}", f"    path: {config}/{split}-*"]
    (root / "README.md").write_text("\n".join([*card, "---", ""]))
    return root


def blink_rows(task: str, count: int, multi_image: int = 0) -> list[dict]:
    rows = []
    for number in range(count + multi_image):
        question = f"Which point is closer to the camera ({number})?" if number % 2 else "Is the bar left?"
        rows.append({
            "idx": f"val_{task}_{number + 1}", "question": question, "sub_task": task.replace("_", " "),
            "image_1": picture(number), "image_2": picture(number + 1) if number >= count else None,
            "image_3": None, "image_4": None, "choices": ["A is closer", "B is closer"],
            "answer": "(A)" if number % 2 else "(B)", "prompt": "", "explanation": "",
        })
    return rows


def blink_folder(root, count=4, multi_image=1):
    return write_hub_folder(root, "val", {
        "Relative_Depth": (blink_rows("Relative_Depth", count, multi_image), BLINK_FEATURES),
        "Spatial_Relation": (blink_rows("Spatial_Relation", count), BLINK_FEATURES),
    })
