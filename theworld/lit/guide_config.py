"""The Hub upload guide's flat configs (``python scripts/train_hf.py --config configs/x.json``), run as they are.

``theworld fit --config configs/datacomp_production.json`` reads a flat JSON (or YAML) file of the guide's keys,
says on stderr where each key lives in TheWorld's config and runs the YAML it became (``--print_config`` shows
it). ``--resume_from X`` on the command line is ``--ckpt_path X``. Keys with no equivalent stop the run before
anything loads, all of them in one paragraph, each with the reason or the nearest option::

    argv = translate_arguments(["fit", "--config", "configs/datacomp_production.json"])
    # ["fit", "--config", "hub:\\n  push_to_hub: true\\n..."]; stderr: "  push_to_hub -> hub.push_to_hub", ...
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from theworld.errors import ConfigError
from theworld.hub import redact

DATACOMP = "mlfoundations/datacomp_small"  # what the guide's `"dataset_name": "datacomp"` streams

# Guide key -> its place in TheWorld's config (dotted), when only the name changes.
RENAMED = {
    "model_name": "model.gemma_model_name",
    "cosmos_model_name": "model.cosmos_model_name",
    "freeze_gemma_vision": "model.freeze_gemma_vision",
    "freeze_gemma_language": "model.freeze_gemma_language",
    "freeze_cosmos_vae": "model.freeze_cosmos_vae",
    "use_gradient_checkpointing": "model.gradient_checkpointing",
    "learning_rate": "model.learning_rate",
    "weight_decay": "model.weight_decay",
    "warmup_steps": "model.warmup_steps",
    "batch_size": "data.batch_size",
    "eval_batch_size": "data.val_batch_size",
    "num_workers": "data.num_workers",
    "num_samples": "data.num_samples",
    "question_template": "data.prompt",
    "gradient_accumulation_steps": "trainer.accumulate_grad_batches",
    "num_epochs": "trainer.max_epochs",
    "max_steps": "trainer.max_steps",
    "max_grad_norm": "trainer.gradient_clip_val",
    "logging_steps": "trainer.log_every_n_steps",
    "eval_steps": "trainer.val_check_interval",
    "output_dir": "trainer.default_root_dir",
    "save_steps": "checkpoint.every_n_train_steps",
    "save_total_limit": "checkpoint.save_top_k",
    "seed": "seed_everything",
    "push_to_hub": "hub.push_to_hub",
    "hub_model_id": "hub.hub_model_id",
    "hub_strategy": "hub.hub_strategy",
    "hub_private_repo": "hub.hub_private_repo",
    "hf_token": "hub.hf_token",
    "resume_from_checkpoint": "ckpt_path",
}

_PRECISION = {"bf16": "bf16-mixed", "fp16": "16-mixed", "no": "32-true", "fp32": "32-true", None: "32-true"}
_ACCELERATOR = {"cuda": "gpu", "gpu": "gpu", "cpu": "cpu", "auto": "auto", "mps": "mps"}


def _dataset(name: Any, config: dict) -> dict:
    # The hf source streams dataset_name only without train_data/val_data (another config may have set them).
    return {
        "data.source": "hf",
        "data.dataset_name": DATACOMP if name == "datacomp" else name,
        "data.train_data": None,
        "data.val_data": None,
    }


def _wandb(enabled: Any, config: dict) -> dict:
    if not enabled:
        return {}
    args = {"project": config.get("wandb_project") or "theworld", "name": config.get("wandb_run_name")}
    if config.get("output_dir"):
        args["save_dir"] = config["output_dir"]
    return {"trainer.logger": {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": args}}


def _choice(target: str, choices: dict) -> Callable[[Any, dict], dict]:
    def convert(value: Any, config: dict) -> dict:
        if value not in choices:
            raise ValueError(f"one of {sorted(str(c) for c in choices if c is not None)} (got {value!r})")
        return {target: choices[value]}

    return convert


# Guide key -> a function of (its value, the whole file) giving the settings it becomes ({} when it needs none).
CONVERTED: dict[str, Callable[[Any, dict], dict]] = {
    "dataset_name": _dataset,
    "streaming": lambda value, config: {},  # Hub datasets are always streamed
    "mixed_precision": _choice("trainer.precision", _PRECISION),
    "device": _choice("trainer.accelerator", _ACCELERATOR),
    "do_eval": lambda value, config: {} if value else {"trainer.limit_val_batches": 0},
    "log_to_wandb": _wandb,
    "wandb_project": lambda value, config: {},  # read by log_to_wandb
    "wandb_run_name": lambda value, config: {},
}
_CONVERTED_TO = {
    "dataset_name": f"data.source: hf + data.dataset_name (datacomp: {DATACOMP})",
    "streaming": "nothing to set: Hub datasets are always streamed",
    "mixed_precision": "trainer.precision (bf16 -> bf16-mixed, fp16 -> 16-mixed, no -> 32-true)",
    "device": "trainer.accelerator (cuda -> gpu)",
    "do_eval": "trainer.limit_val_batches: 0 when false",
    "log_to_wandb": "trainer.logger: lightning.pytorch.loggers.WandbLogger",
    "wandb_project": "trainer.logger.init_args.project (with log_to_wandb)",
    "wandb_run_name": "trainer.logger.init_args.name (with log_to_wandb)",
}

# Guide keys with no equivalent: why, and the nearest option.
NO_EQUIVALENT = {
    "log_to_tensorboard": "the run's TensorBoard events go to the Hub with hub.push_logs: true; for a local "
    "TensorBoard log set trainer.logger: lightning.pytorch.loggers.TensorBoardLogger",
    "eval_strategy": "validation runs every trainer.val_check_interval steps (the guide's eval_steps)",
    "evaluation_strategy": "validation runs every trainer.val_check_interval steps (the guide's eval_steps)",
    "save_strategy": "checkpoints are saved every checkpoint.every_n_train_steps steps (the guide's save_steps)",
    "lr_scheduler_type": "the schedule is a linear warmup then a cosine decay (model.warmup_steps, model.min_lr_ratio)",
    "report_to": "set the logger with trainer.logger (log_to_wandb: true is W&B)",
    "load_full_cosmos_pipeline": "only the Cosmos VAE is loaded (model.cosmos_model_name, model.cosmos_subfolder)",
}


def is_guide_config(data: Any) -> bool:
    """A flat mapping with at least one of the guide's keys (TheWorld's own configs nest their settings)."""
    return (
        isinstance(data, dict)
        and not any(isinstance(value, dict) for value in data.values())
        and any(str(key).startswith("_") or key in RENAMED or key in CONVERTED for key in data)
    )


def translate(data: dict, name: str) -> tuple[dict, list[str]]:
    """The guide's flat ``data`` as a nested TheWorld config, and a line per key naming its new place.

    Raises ConfigError listing every key with no equivalent (or a value that cannot be converted)."""
    settings: dict[str, Any] = {}
    lines, refused = [], []
    for key, value in data.items():
        if str(key).startswith("_"):  # "_comment" and the like: notes for people
            lines.append(f"  {key}: ignored (a comment)")
        elif key in RENAMED:
            settings[RENAMED[key]] = value
            lines.append(f"  {key} -> {RENAMED[key]}")
        elif key in CONVERTED:
            try:
                settings.update(CONVERTED[key](value, data))
            except ValueError as err:
                refused.append(f"{key}: give {err}")
                continue
            lines.append(f"  {key} -> {_CONVERTED_TO[key]}")
        elif key in NO_EQUIVALENT:
            refused.append(f"{key}: no equivalent; {NO_EQUIVALENT[key]}")
        else:
            known = [*RENAMED, *CONVERTED, *NO_EQUIVALENT]
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]}?)" if close else ""
            refused.append(f"{key}: not a key of the guide's configs{hint}")
    if refused:
        raise ConfigError(
            redact(
                f"--config {name} is a config of the Hub upload guide, and {len(refused)} of its keys have no place in "
                "TheWorld's config: " + "; ".join(refused) + ". Remove them (or set the option named) and run again; "
                "every other key is translated (the table: docs/guide-configs.md, 'Configs from the Hub upload guide')."
            )
        )
    nested: dict[str, Any] = {}
    for dotted, value in settings.items():
        *groups, leaf = dotted.split(".")
        node = nested
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = value
    return nested, lines


def translate_arguments(argv: list[str]) -> list[str]:
    """``argv`` with each guide config given to ``--config`` replaced by the YAML it becomes, and ``--resume_from``
    by ``--ckpt_path``; says on stderr what each key became."""
    translated, take_path = [], False
    for arg in argv:
        flag, equals, value = arg.partition("=")
        if take_path or (equals and flag in ("-c", "--config")):
            text = _translated_file(arg if take_path else value)
            if text is not None:
                arg = text if take_path else f"{flag}={text}"
            translated.append(arg)
            take_path = False
            continue
        take_path = arg in ("-c", "--config")
        if flag == "--resume_from":
            sys.stderr.write("theworld: --resume_from is --ckpt_path in theworld\n")
            arg = f"--ckpt_path={value}" if equals else "--ckpt_path"
        translated.append(arg)
    return translated


def _translated_file(path: str) -> str | None:
    """The YAML text a guide config at ``path`` becomes (None: not a guide config, or not readable here)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None  # the parser (or the syntax check) says what is wrong
    if not is_guide_config(data):
        return None
    nested, lines = translate(data, path)
    sys.stderr.write(
        f"theworld: {path} is a config of the Hub upload guide; its keys in TheWorld's config "
        f"(--print_config shows the whole YAML):\n" + "\n".join(lines) + "\n"
    )
    return yaml.safe_dump(nested, sort_keys=False)
