"""The model card (README.md) pushed with every Hub commit.

Example::

    from theworld.hub_utils import generate_model_card

    card = generate_model_card(
        gemma_model_name="google/gemma-3-4b-it",
        cosmos_model_name="nvidia/Cosmos-Predict2-2B-Video2World",
        dataset_name="mlfoundations/datacomp_small",
        num_samples=1_000_000, trainable_params=50_000, total_params=6_000_000_000,
        learning_rate=1e-4, batch_size=16, num_epochs=3,
        hub_model_id="your-username/theworld-datacomp",
    )
    open("README.md", "w").write(card)
"""

from __future__ import annotations

import functools
import os
import platform
import re
from dataclasses import fields
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData
from packaging.requirements import Requirement

from theworld.config import TheWorldConfig
from theworld.evaluate import task_name
from theworld.hub.report import DATA_YIELD_NAME, EVALUATION_NAME, LOSS_CURVE, gallery
from theworld.hub.strategies import FINAL_TEXT, STRATEGIES
from theworld.layout import PROVENANCE_DIR, PROVENANCE_NAME
from theworld.run_summary import BenchmarkRecord, RunSummary
from theworld.world import world_token_count

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_CONFIG_FIELDS = {f.name for f in fields(TheWorldConfig)}
# The Hub's metric ids of the held-out caption scores; the rest (exact match, attributes) are accuracies.
CAPTION_METRIC_IDS = {"cider": "cider", "bleu4": "bleu"}

CITATIONS = """\
```bibtex
@article{gemma3,
  title   = {Gemma 3 Technical Report},
  author  = {{Gemma Team}},
  journal = {arXiv preprint arXiv:2503.19786},
  year    = {2025}
}

@article{cosmos,
  title   = {Cosmos World Foundation Model Platform for Physical AI},
  author  = {{NVIDIA}},
  journal = {arXiv preprint arXiv:2501.03575},
  year    = {2025}
}

@inproceedings{datacomp,
  title     = {DataComp: In search of the next generation of multimodal datasets},
  author    = {Gadre, Samir Yitzhak and Ilharco, Gabriel and Fang, Alex and others},
  booktitle = {Advances in Neural Information Processing Systems (Datasets and Benchmarks Track)},
  year      = {2023}
}
```"""


def _hub_ids(*names: str | None) -> list[str]:
    """The names that are Hub repo ids (local paths, e.g. the demo's tiny models, are left out of the metadata)."""
    return [n for n in names if n and _REPO_ID.fullmatch(n) and not os.path.exists(n)]


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n:,} ({n / size:.1f}{unit})"
    return f"{n:,}"


def _usage(repo_id: str, config: dict) -> str:
    """The guide's three-step recipe and ``from_pretrained``, with this run's model options so it runs as written."""
    defaults = TheWorldConfig().to_dict()
    options = [f'    cosmos_model_name="{config["cosmos_model_name"]}",']
    options += [
        f"    {name}={config[name]!r},"
        for name in ("freeze_gemma_vision", "freeze_gemma_language", "freeze_cosmos_vae")
    ]
    options += [
        f"    {name}={value!r},"
        for name, value in config.items()
        if name
        not in {
            "gemma_model_name",
            "cosmos_model_name",
            "freeze_gemma_vision",
            "freeze_gemma_language",
            "freeze_cosmos_vae",
        }
        and value != defaults[name]
    ]
    body = "\n".join(options)
    return f"""\
```python
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file
from theworld import TheWorld

# 1. The base model: pretrained Gemma 3 + Cosmos VAE (downloaded once, then cached).
model = TheWorld(
    "{config["gemma_model_name"]}",
{body}
)

# 2. This repo's trainable weights (megabytes). For a private repo, set HF_TOKEN or pass token=...
checkpoint_path = hf_hub_download(repo_id="{repo_id}", filename="model.safetensors")

# 3. Load them on top of the base model.
model.load_state_dict(load_file(checkpoint_path), strict=False)
model.eval()

# Or in one call: rebuilds the base model from config.json and checks every trainable key.
model = TheWorld.from_pretrained("{repo_id}")
```"""


def generate_model_card(
    gemma_model_name: str,
    cosmos_model_name: str,
    dataset_name: str | None,
    num_samples: int,
    trainable_params: int,
    total_params: int,
    learning_rate: float,
    batch_size: int,
    num_epochs: int,
    *,
    results: str = "",
    eval_results: list[EvalResult] | None = None,
    **extra,
) -> str:
    """README.md text for a TheWorld repo: metadata, architecture, training setup, usage, citations.

    ``batch_size`` is the effective batch size (per device x devices x gradient accumulation).
    ``extra`` may hold: ``hub_model_id`` (used in the usage example), ``global_step``, ``max_steps``,
    ``final`` (training finished), ``hub_strategy`` (what the repo holds, for how to train on from it),
    ``model_config`` (a TheWorldConfig dict) or individual TheWorldConfig options such as
    ``freeze_gemma_language=False``; any other key is listed under "Other settings".
    ``results`` (Markdown) goes in a "Results" section and ``eval_results`` into the ``model-index`` metadata
    (:func:`card_from_summary` fills both from a run).
    """
    model_config = {**TheWorldConfig().to_dict(), **extra.pop("model_config", {})}
    model_config.update({k: extra.pop(k) for k in list(extra) if k in _CONFIG_FIELDS})
    model_config.update(gemma_model_name=gemma_model_name, cosmos_model_name=cosmos_model_name)
    repo_id = extra.pop("hub_model_id", None) or "your-username/theworld-model"
    global_step = extra.pop("global_step", None)
    max_steps = extra.pop("max_steps", None)
    final = extra.pop("final", None)
    hub_strategy = extra.pop("hub_strategy", None)
    # The Cosmos (Wan2.1) VAE downsamples 8x in space.
    world_tokens = extra.pop("world_tokens", None) or world_token_count(
        8, model_config["world_image_size"], model_config["world_patch_size"]
    )

    datasets = _hub_ids(dataset_name)
    metadata = ModelCardData(
        base_model=_hub_ids(gemma_model_name, cosmos_model_name) or None,
        library_name="theworld",
        license="gemma",
        pipeline_tag="image-text-to-text",
        tags=["theworld", "gemma3", "cosmos", "world-model", "vision-language", "image-text-to-text"],
        datasets=datasets or None,
        model_name=repo_id.split("/")[-1] if eval_results else None,
        eval_results=eval_results or None,
    )
    frozen = {
        "Gemma 3 vision tower + multimodal projector": model_config["freeze_gemma_vision"],
        "Gemma 3 language model": model_config["freeze_gemma_language"],
        "Cosmos VAE encoder": model_config["freeze_cosmos_vae"],
    }
    parts = "\n".join(f"| {name} | {'frozen' if off else '**trainable**'} |" for name, off in frozen.items())
    steps = f"{global_step:,}" if global_step is not None else "n/a"
    if max_steps:
        steps += f" of {max_steps:,}"
    status = "" if final is None else "Training finished." if final else "Training in progress: updated at every push."
    others = "\n".join(f"| {key} | {value} |" for key, value in extra.items())
    others = f"\n### Other settings\n\n| setting | value |\n|---|---|\n{others}\n" if others else ""
    is_datacomp = "datacomp" in str(dataset_name).lower()
    datacomp = " ([DataComp](https://www.datacomp.ai/), Gadre et al. 2023)" if is_datacomp else ""
    return f"""---
{metadata.to_yaml()}
---

# TheWorld: Gemma 3 with Cosmos world tokens

{status}

TheWorld fuses the vision-language model {_link(gemma_model_name)} with the VAE encoder of NVIDIA's Cosmos
world model {_link(cosmos_model_name)} (its `{model_config["cosmos_subfolder"]}` subfolder). This repository holds
**only the trainable parameters** (`model.safetensors`) and the `config.json` that rebuilds the base model; the
frozen Gemma and Cosmos weights load from their own repositories.

## Architecture

- The image is resized to {model_config["world_image_size"]} px, scaled to [-1, 1] and encoded by the Cosmos VAE; the
  normalised latents are patchified {model_config["world_patch_size"]}x{model_config["world_patch_size"]} into about
  {world_tokens} *world tokens* and projected to Gemma's hidden size by a trainable projector (Linear, GELU, Linear,
  scaled to match text embeddings).
- The world tokens sit in Gemma's input between two new trainable tokens, `<the_world_start>` and
  `<the_world_end>`, before Gemma's own image tokens and the prompt.
- The loss is on the answer (the caption) only.

### Frozen and trainable parts

| part | status |
|---|---|
| World projector + `<the_world_start>`/`<the_world_end>` embeddings | **trainable** |
{parts}

Trainable parameters: {_count(trainable_params)} of {_count(total_params)} in total.

## Training

| setting | value |
|---|---|
| learning rate | {learning_rate:g} |
| effective batch size | {batch_size} |
| epochs | {num_epochs} |
| optimizer steps | {steps} |
| samples seen | {num_samples:,} |
{others}{results}
## Dataset

Image-caption pairs from {_link(dataset_name, "datasets/") if dataset_name else "a custom dataset"}{datacomp}.

## Usage

With the `theworld` package installed:

{_usage(repo_id, model_config)}

{_continuing(repo_id, hub_strategy)}

## Citations

{CITATIONS}
"""


def _continuing(repo_id: str, hub_strategy: str | None) -> str:
    """How to train on from the repo, true to what its ``hub_strategy`` pushes (unknown: every layout)."""
    if hub_strategy is not None and hub_strategy in STRATEGIES:
        return STRATEGIES[hub_strategy].card(repo_id)
    return (
        f"Intermediate checkpoints (when pushed) are in `last-checkpoint/` and `checkpoint-*/`; "
        f"{FINAL_TEXT[0].lower()}{FINAL_TEXT[1:]} If `last-checkpoint/` is there, resume training with "
        f"`--ckpt_path hf://{repo_id}`; otherwise start a new stage from the weights with `--model.init_from "
        f"hf://{repo_id}`."
    )


def card_from_summary(summary: RunSummary, repo_id: str, hub_strategy: str | None = None) -> str:
    """The card of a run, from its :class:`~theworld.run_summary.RunSummary` (what HubSyncCallback pushes): the
    guide's card plus the results table, loss curve, gallery, ``model-index``, base commits and versions.
    ``hub_strategy`` says what the repo holds, so that the card tells how to train on from it."""
    config = summary.model_config
    return generate_model_card(
        gemma_model_name=config.gemma_model_name,
        cosmos_model_name=config.cosmos_model_name,
        dataset_name=summary.dataset,
        num_samples=summary.samples_seen,
        trainable_params=summary.trainable_params,
        total_params=summary.total_params,
        learning_rate=summary.learning_rate,
        batch_size=summary.effective_batch,
        num_epochs=summary.epochs,
        hub_model_id=repo_id,
        global_step=summary.step,
        max_steps=summary.max_steps,
        final=summary.final,
        hub_strategy=hub_strategy,
        model_config=config.to_dict(),
        world_tokens=summary.world_tokens,
        results=_results(summary),
        eval_results=_eval_results(summary),
    )


@functools.cache  # what is installed does not change while a run pushes its card again and again
def framework_versions() -> dict[str, str]:
    """Python, theworld and every package theworld depends on, as installed in the process that trained: the card
    records what made the weights (constraints.txt holds what CI tested)."""
    direct = [Requirement(spec).name for spec in requires("theworld") or [] if "extra ==" not in spec]
    return {"python": platform.python_version(), "theworld": _version("theworld")} | {
        name: _version(name) for name in sorted(direct, key=str.lower)
    }


def _results(summary: RunSummary) -> str:
    """Markdown: the validation history, the latest figures, the pictures, base commits, wall time, versions."""
    config = summary.model_config
    lines = ["", "## Results", ""]
    if summary.history:
        attributes = sorted({name for r in summary.history for name in r.captions})
        lines += [
            "| step | samples seen | train loss | val loss |" + "".join(f" caption {a} |" for a in attributes),
            "|---:|---:|---:|---:|" + "---:|" * len(attributes),
        ]
        for r in summary.history:
            lines.append(
                f"| {r.step:,} | {r.samples:,} | {_number(r.train_loss)} | {_number(r.val_loss)} |"
                + "".join(f" {_caption_score(a, r.captions[a])} |" if a in r.captions else " |" for a in attributes)
            )
        last = summary.history[-1]
        figures = [f"val loss {_number(last.val_loss)}"] + [
            f"caption {a} {_caption_score(a, v)}" for a, v in last.captions.items()
        ]
        lines += ["", f"Latest validation (step {last.step:,}): " + ", ".join(figures) + "."]
    else:
        lines.append("No validation has run yet.")
    if summary.train_losses or summary.history:
        lines += ["", f"![Loss curve]({LOSS_CURVE})"]
    shown = gallery(summary)
    if shown:
        lines += [
            "",
            f"### Held-out samples (step {summary.history[-1].step if summary.history else summary.step:,})",
            "",
            "| image | generated | reference |",
            "|---|---|---|",
        ]
        lines += [f"| ![{s.key}]({path}) | {_cell(s.generated)} | {_cell(s.reference)} |" for path, s in shown]
    if summary.benchmark:
        lines += _benchmark_section(summary.benchmark)
    hours = summary.wall_seconds / 3600
    lines += [
        "",
        "### Run",
        "",
        "| | |",
        "|---|---|",
        f"| effective batch | {summary.effective_batch} |",
        f"| data | {summary.data_yield_line()} (`{DATA_YIELD_NAME}`) |",
        *(
            [
                f"| provenance | each trained sample's key: `{PROVENANCE_DIR}/`, the files `{PROVENANCE_NAME}` names "
                f"({summary.provenance_rows:,} rows) |"
            ]
            if summary.provenance_rows is not None
            else []
        ),
        f"| wall time | {summary.wall_seconds:,.0f} s ({hours:.2f} h) |",
        f"| Gemma base | `{config.gemma_model_name}` @ `{config.gemma_revision or 'local folder'}` |",
        f"| Cosmos base | `{config.cosmos_model_name}` @ `{config.cosmos_revision or 'local folder'}` |",
    ]
    lines += ["", "### Framework versions", ""] + [f"- {name} {ver}" for name, ver in framework_versions().items()]
    return "\n".join(lines) + "\n"


def _benchmark_section(record: BenchmarkRecord) -> list[str]:
    """Markdown: does the world help? Task x condition accuracy and the world gain, beside the results file."""
    result = record.result
    names = {
        "full": "TheWorld",
        "no_world": "no world tokens",
        "shuffled_world": "shuffled world tokens",
        "gemma": "Gemma 3 alone",
        "baseline": "trained control",
    }
    lines = [
        "",
        f"### Benchmark: {_link(result.dataset, 'datasets/')} (step {record.step:,})",
        "",
        f"Protocol **{result.protocol}**: {result.protocol_description}. `all` is the {result.total_rule}. "
        "Accuracy with 95% Wilson score intervals. The **world gain** is TheWorld's accuracy minus its accuracy when "
        "each image gets another image's world tokens (95% paired bootstrap interval, "
        f"{result.bootstrap_samples:,} resamples): what the world tokens add.",
        "",
        "| task | questions | " + " | ".join(names[c] for c in result.conditions) + " | world gain |",
        "|---|---:|" + "---:|" * (len(result.conditions) + 1),
    ]
    for name, sub_task, by_condition, gains in result.rows():
        gain = gains.get("shuffled_world")
        if sub_task:  # in the results file
            continue
        cells = [
            f"{a.accuracy:.1%} ({a.ci[0]:.1%}-{a.ci[1]:.1%})" if a else "n/a"
            for a in map(by_condition.get, result.conditions)
        ]
        gain_text = (
            f"**{gain.gain * 100:+.1f} points** ({gain.ci[0] * 100:+.1f} to {gain.ci[1] * 100:+.1f})" if gain else "n/a"
        )
        lines.append(f"| {name} | {next(iter(by_condition.values())).n:,} | " + " | ".join(cells) + f" | {gain_text} |")
    lines += ["", f"Every answer: `{EVALUATION_NAME}`."]
    return lines


def _eval_results(summary: RunSummary) -> list[EvalResult]:
    """``model-index`` entries: the latest validation's loss and caption scores, and the benchmark accuracy of the
    model as trained (the ablations and the baseline are the card's table, not results of this model)."""
    entries = []
    if summary.history:
        last, dataset = summary.history[-1], summary.dataset or "held-out data"
        metrics = [("loss", "val/loss", last.val_loss)] if last.val_loss is not None else []
        metrics += [
            (CAPTION_METRIC_IDS.get(name, "accuracy"), f"val/caption_{name}", value)
            for name, value in last.captions.items()
        ]
        entries += [
            EvalResult(
                task_type="image-to-text",
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type=kind,
                metric_name=name,
                metric_value=round(float(value), 6),
            )
            for kind, name, value in metrics
        ]
    if summary.benchmark:
        result = summary.benchmark.result
        entries += [
            EvalResult(
                task_type="visual-question-answering",
                dataset_type=result.dataset,
                dataset_name=f"{Path(result.dataset).name} {task_name(a)}",
                dataset_config=a.config,
                dataset_split=a.split,
                metric_type="accuracy",
                metric_name=f"{task_name(a)} accuracy ({result.protocol} protocol)",
                metric_value=round(a.accuracy, 6),
            )
            for a in result.accuracies
            if a.condition == "full" and a.sub_task is None and a.config
        ]
    return entries


def _caption_score(name: str, value: float) -> str:
    """CIDEr (0-10) and BLEU-4 (0-1) as numbers; exact match and attribute scores as the shares they are."""
    return f"{value:.3f}" if name in CAPTION_METRIC_IDS else f"{value:.0%}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ").strip() or "(empty)"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _link(name: str, kind: str = "") -> str:
    """A Hub link for a repo id, plain code for a local path."""
    return f"[{name}](https://huggingface.co/{kind}{name})" if _hub_ids(name) else f"`{name}`"
