"""The Hub upload guide's flat configs (``python scripts/train_hf.py --config configs/x.json``), run as they are.

The guide's keys are the fields of the reference project's ``TrainingConfig`` (kasohrab/theworld,
python/theworld/config.py), plus a few of the Hugging Face Trainer's: each has a place here, or a reason.

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
VSR = "cambridgeltl/vsr_random"  # the reference project's `"dataset_name": "vsr"`
_DATASETS = {"datacomp": DATACOMP, "vsr": VSR}

# Guide key -> its place in TheWorld's config (dotted), when only the name changes.
RENAMED = {
    "model_name": "model.gemma_model_name",
    "cosmos_model_name": "model.cosmos_model_name",
    "freeze_gemma_vision": "model.freeze_gemma_vision",
    "freeze_gemma_language": "model.freeze_gemma_language",
    "freeze_cosmos_vae": "model.freeze_cosmos_vae",
    "enable_world": "model.enable_world",
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
    "max_grad_norm": "trainer.gradient_clip_val",
    "logging_steps": "trainer.log_every_n_steps",
    "eval_steps": "trainer.val_check_interval",
    "output_dir": "trainer.default_root_dir",
    "save_steps": "checkpoint.every_n_train_steps",
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
    settings = {
        "data.source": "hf",
        "data.dataset_name": _DATASETS.get(name, name),
        "data.train_data": None,
        "data.val_data": None,
    }
    if name == "vsr":  # rows of (image file name, statement, 0/1 label): the statement asked, the label answered
        settings.update({"data.question_column": "caption", "data.answer_column": "label"})
    return settings


def _loggers(value: Any, config: dict) -> dict:
    """log_to_wandb and log_to_tensorboard together: each logger asked for, side by side."""
    loggers = []
    if config.get("log_to_wandb"):
        args = {"project": config.get("wandb_project") or "theworld", "name": config.get("wandb_run_name")}
        if config.get("output_dir"):
            args["save_dir"] = config["output_dir"]
        loggers.append({"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": args})
    if config.get("log_to_tensorboard"):
        loggers.append(
            {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": config.get("output_dir") or "."},
            }
        )
    return {"trainer.logger": loggers[0] if len(loggers) == 1 else loggers} if loggers else {}


def _null_as(target: str, meaning: Any) -> Callable[[Any, dict], dict]:
    """``target``, with the guide's null spelled as TheWorld spells it (``meaning``)."""
    return lambda value, config: {target: meaning if value is None else value}


def _what_theworld_does(*accepted: Any, otherwise: str) -> Callable[[Any, dict], dict]:
    """Nothing to set when the value asks for what TheWorld does anyway (null too); anything else is refused,
    saying what TheWorld does ``otherwise``."""

    def convert(value: Any, config: dict) -> dict:
        if value is not None and value not in accepted:
            raise ValueError(" or ".join([*(repr(a) for a in accepted), "null"]) + f" (got {value!r}): {otherwise}")
        return {}

    return convert


def _ignored(value: Any, config: dict) -> dict:
    return {}


def _choice(target: str, choices: dict) -> Callable[[Any, dict], dict]:
    def convert(value: Any, config: dict) -> dict:
        if value not in choices:
            raise ValueError(f"one of {sorted(str(c) for c in choices if c is not None)} (got {value!r})")
        return {target: choices[value]}

    return convert


# Guide key -> a function of (its value, the whole file) giving the settings it becomes ({} when it needs none);
# a ValueError names the values it takes.
CONVERTED: dict[str, Callable[[Any, dict], dict]] = {
    "dataset_name": _dataset,
    "streaming": _ignored,  # Hub datasets are always streamed
    "mixed_precision": _choice("trainer.precision", _PRECISION),
    "device": _choice("trainer.accelerator", _ACCELERATOR),
    "do_eval": lambda value, config: {} if value else {"trainer.limit_val_batches": 0},
    "max_steps": _null_as("trainer.max_steps", -1),
    "save_total_limit": _null_as("checkpoint.save_top_k", -1),
    "log_to_wandb": _loggers,
    "log_to_tensorboard": _loggers,
    "wandb_project": _ignored,  # read by _loggers
    "wandb_run_name": _ignored,
    # The reference project's settings that TheWorld has fixed (or chooses itself): accepted when they ask for
    # what it does anyway.
    "num_world_steps": _what_theworld_does(0, otherwise="TheWorld encodes the current frame only"),
    "max_world_steps": _ignored,
    "world_projection_mode": _what_theworld_does("spatial", otherwise="TheWorld makes a world token per latent patch"),
    "projection_architecture": _what_theworld_does(
        "mlp", "mlp_no_final_gelu", otherwise="TheWorld's projector is an MLP"
    ),
    "max_seq_length": _ignored,
    "pin_memory": _ignored,
    "persistent_workers": _ignored,
    "prefetch_factor": _ignored,
    "save_safetensors": _what_theworld_does(True, otherwise="checkpoints are always safetensors"),
    "draw_bboxes": _what_theworld_does(False, otherwise="TheWorld does not draw on images"),
    "train_dataset_path": _what_theworld_does(otherwise="give WebDataset shards or parquet files as data.train_data"),
    "eval_dataset_path": _what_theworld_does(otherwise="give WebDataset shards or parquet files as data.val_data"),
    "image_folder": _ignored,
}
_CONVERTED_TO = {
    "dataset_name": f"data.source: hf + data.dataset_name (datacomp: {DATACOMP}; vsr: {VSR}, its caption column "
    "asked, its label answered)",
    "streaming": "nothing to set: Hub datasets are always streamed",
    "mixed_precision": "trainer.precision (bf16 -> bf16-mixed, fp16 -> 16-mixed, no -> 32-true)",
    "device": "trainer.accelerator (cuda -> gpu)",
    "do_eval": "trainer.limit_val_batches: 0 when false",
    "max_steps": "trainer.max_steps (null: -1, trainer.max_epochs decides)",
    "save_total_limit": "checkpoint.save_top_k (null: -1, every checkpoint kept)",
    "log_to_wandb": "trainer.logger: lightning.pytorch.loggers.WandbLogger",
    "log_to_tensorboard": "trainer.logger: lightning.pytorch.loggers.TensorBoardLogger (beside W&B), in output_dir",
    "wandb_project": "trainer.logger.init_args.project (with log_to_wandb)",
    "wandb_run_name": "trainer.logger.init_args.name (with log_to_wandb)",
    "num_world_steps": "nothing to set: world tokens come from the current frame only (0), as in TheWorld",
    "max_world_steps": "nothing to set: it sizes the embeddings of future frames, which TheWorld does not predict",
    "world_projection_mode": "nothing to set: a world token per latent patch (spatial), as in TheWorld",
    "projection_architecture": "nothing to set: TheWorld's projector is Linear -> GELU -> Linear -> RMS norm "
    "(model.projector_hidden_dim); its weights are not the reference project's",
    "max_seq_length": "nothing to set: a sequence is the image tokens, the prompt and at most "
    "data.max_caption_tokens caption tokens",
    "pin_memory": "nothing to set: TheWorld pins batches when it trains on a GPU",
    "persistent_workers": "nothing to set: loader workers restart each epoch (the data position resumes exactly)",
    "prefetch_factor": "nothing to set: TheWorld prefetches 4 batches per loader worker",
    "save_safetensors": "nothing to set: checkpoints are always safetensors",
    "draw_bboxes": "nothing to set: images are used as they are",
    "train_dataset_path": "nothing to set when null (the training data is data.train_data)",
    "eval_dataset_path": "nothing to set when null (the held-out data is data.val_data)",
    "image_folder": "nothing to set: TheWorld reads each row's image from the row (data.image_column) or its URL, "
    "not from a folder; give a folder's images as WebDataset shards (data.source: webdataset, data.train_data)",
}

# Guide keys with no equivalent: why, and the nearest option.
NO_EQUIVALENT = {
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
