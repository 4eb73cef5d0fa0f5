"""``theworld``: the LightningCLI entry point (``fit``, ``validate``, ``predict``, ``--print_config``), and
``theworld cache_latents`` (see ``theworld.latent_cache``)."""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import NoReturn

import huggingface_hub
import torch
import yaml
from huggingface_hub import HfApi
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from theworld import lightning_private, stops
from theworld.callbacks.checkpoint import TrainableCheckpoint, check_intact, newest_checkpoint
from theworld.callbacks.predictions import JsonlPredictionWriter
from theworld.callbacks.progress import TrainingProgress
from theworld.checkpoint import saved_loader_workers
from theworld.config import CONFIG_NAME, TheWorldConfig
from theworld.data.sources import SOURCES
from theworld.errors import ConfigError, UserError
from theworld.estimate import print_estimate, with_json_values
from theworld.hub import (
    HubConfig,
    HubUnreachableError,
    check_dataset,
    download_files,
    download_provenance,
    download_resume_checkpoint,
    is_hf_ref,
    is_hub_repo_id,
    pin_base,
    preflight,
    redact,
    resolve_token,
)
from theworld.hub.strategies import resumable_names
from theworld.layout import TRAINING_STATE_NAME, WEIGHTS_NAME
from theworld.lit.datamodule import TheWorldDataModule
from theworld.lit.guide_config import translate_arguments
from theworld.lit.module import TheWorldModule
from theworld.lit.strategies import default_wrap_layers
from theworld.lit.trainer import TheWorldTrainer
from theworld.registry import load_installed_extensions
from theworld.run_lock import hold_run_folder

log = logging.getLogger(__name__)

_CONFIG_FLAGS = ("-c", "--config")
_CONFIG_FILE_TOKEN = "hf_token in the config file"  # a top-level `hf_token:` (the flag's name, set in YAML)
# What people type for --hf_token: --hf-token, --token, --hub.token, --hub_token, --huggingface-token, --auth_token...
_TOKEN_TYPO = re.compile(
    r"((hub|hf|hugging[-_]?face([-_]hub)?)[-_.])*(hf[-_]?|auth[-_]|access[-_]|use[-_]auth[-_])?token", re.IGNORECASE
)


# fit, validate, predict, cache_latents, estimate and evaluate (benchmarks; no `test`: TheWorld's data has no test
# split), each with the Trainer arguments the CLI fills in itself.
SUBCOMMANDS: dict[str, set[str]] = {
    "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
    "validate": {"model", "dataloaders", "datamodule"},
    "predict": {"model", "dataloaders", "datamodule"},
    "cache_latents": {"model", "datamodule"},
    "estimate": {"model", "datamodule"},
    "evaluate": {"model", "datamodule"},
}


class TheWorldArgumentParser(LightningArgumentParser):
    """Lightning's parser; a config mistake is one ``theworld: error:`` paragraph instead of the usage text."""

    def __init__(self, *args, **kwargs):
        # argparse would take `--model.learning_rat` for `--model.learning_rate`: a typo must be an error.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse is trying an alternative and catches this
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        command = " ".join(["theworld", *parser.prog.replace(" [options]", "").split()[1:]])
        text = " ".join(message.split()).rstrip(".")
        # Python reprs of the expected type, in words: "Expected a <class 'int'>" -> "Expected int".
        text = re.sub(r"a <class '(?:\w+\.)*(\w+)'>", r"\1", text)
        text = re.sub(r"a typing\.Literal\[(.*?)\]", r"one of \1", text)
        # A mistyped token flag, or a token given as a stray value, is quoted in the message: masked here.
        text = redact(text)
        if re.search(r'"subcommand" .* not provided', text):  # `theworld` alone: nothing to fix in a YAML
            sys.stderr.write(
                "theworld: error: no subcommand was given. `theworld fit --config configs/demo.yaml` trains "
                "the demo (after `python -m theworld.testing.demo_assets`); validate, predict and "
                "cache_latents take the same --config; `theworld --help` lists them.\n"
            )
            sys.exit(2)
        sys.stderr.write(
            f"theworld: error: {text}.{_did_you_mean(text, parser)} Fix it in the YAML config or on "
            f"the command line; `{command} --help` lists every option and its type.\n"
        )
        sys.exit(2)

    def dump(self, cfg: Namespace, *args, **kwargs) -> str:
        # Every printed or written config (--print_config, config.yaml, training_args.json) goes through
        # here: credential-like values (`*_token`, `api_key`...) are nulled whatever set them.
        return super().dump(redact(cfg), *args, **kwargs)


def _did_you_mean(message: str, parser) -> str:
    """`` Did you mean --trainer.max_steps?`` for each unknown key the message names that is close to a real one;
    ``--hf_token`` for the usual spellings of a token option (``--hf-token``, ``--token``, ``hub.token``...)."""
    unknown = re.findall(r"(?<![\w.-])--([\w.-]+)", message.partition("unrecognized arguments:")[2])
    unknown += re.findall(r"does not accept (?:option|nested key) '([\w.-]+)'", message)
    known = [flag[2:] for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    matches = [
        difflib.get_close_matches(key, known, n=1, cutoff=0.75) or (["hf_token"] if _TOKEN_TYPO.fullmatch(key) else [])
        for key in unknown
    ]
    return "".join(f" Did you mean --{match[0]}?" for match in matches if match)


class TheWorldCLI(LightningCLI):
    """Adds the ``checkpoint:`` and ``hub:`` groups and the top-level ``--hf_token`` flag to Lightning's CLI.

    With ``hub.push_to_hub`` the ``fit`` trainer gets a :class:`HubSyncCallback`. ``--ckpt_path`` and
    ``--model.init_from`` accept ``hf://user/repo[@revision][/folder]``. The token is taken out of the
    config before anything is saved or logged.
    """

    def __init__(self, *args, **kwargs):
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        # Only the parser of the subcommand asked for is built (each takes a quarter of a second or more); with
        # none recognised (`theworld --help`, a mistyped subcommand) all of them, to list them.
        words = [str(arg) for arg in argv] if isinstance(argv, list) else []
        self.asked_subcommand = next((word for word in words if word in SUBCOMMANDS), None)
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]  # Lightning's is static; it calls self's
        """The subcommand asked for, or all of :data:`SUBCOMMANDS`."""
        asked = getattr(self, "asked_subcommand", None)
        return {asked: SUBCOMMANDS[asked]} if asked else dict(SUBCOMMANDS)

    def add_arguments_to_parser(self, parser) -> None:
        # Always on: the `checkpoint:` group configures the trainable-only checkpoint callback.
        parser.add_lightning_class_args(TrainableCheckpoint, "checkpoint")
        parser.add_lightning_class_args(JsonlPredictionWriter, "predictions")
        parser.add_class_arguments(HubConfig, "hub")
        parser.add_argument(
            "--hf_token",
            type=str | None,
            default=None,
            help="Hugging Face token; wins over hub.hf_token, $HF_TOKEN and the cached `hf auth login` token.",
        )

    def parse_arguments(self, parser, args) -> None:
        self.command_line = list(sys.argv[1:] if args is None else args)  # to tell the flags from the config files
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        # Every check that can fail before a weight loads, in the order a user would fix them; each a step below.
        config = self.config.get(str(self.subcommand), self.config)
        self._refuse_missing_config(config)
        if self.subcommand == "estimate":  # loads no weight, reads no data, asks no Hub: prints, then stops
            print_estimate(config, fsdp_units=default_wrap_layers())
            sys.exit(0)
        self._check_accelerator(config)
        self._check_devices(config)
        self._refuse_negative_max_steps(config)
        self._take_the_token(config)
        self._loggers_follow_root_dir(config)
        self._check_output_folders(config)
        parser = lightning_private.subcommand_parser(self, self.subcommand)
        self.run_config = json.loads(parser.dump(config, format="json", skip_none=False))
        self._resume_a_requeued_slurm_job(config)
        self._resolve_hf_refs(config)
        # Before any weight loads: a missing folder or a gated or unknown model id fails here, in a second.
        self._check_weight_sources(config)
        self._pin_bases(config)
        self.hub_api = self._hub_preflight(config)
        self._refuse_another_runs_folder(config)

    @staticmethod
    def _refuse_negative_max_steps(config) -> None:
        max_steps = config.trainer.get("max_steps")
        if max_steps is not None and max_steps < -1:
            raise ConfigError(
                f"trainer.max_steps={max_steps}: give the number of optimizer steps to train (a positive number; it "
                f"is also the length of the LR schedule), or -1 for no limit with trainer.max_epochs set instead."
            )

    def _take_the_token(self, config) -> None:
        """Moves the Hub token out of the config (``--hf_token``, ``hub.hf_token``, or ``hf_token:`` at the top of a
        config file, as the guide's configs have it) into ``hub_token``, and out of ``sys.argv``."""
        top_level = config.get("hf_token")
        if top_level and not any(arg.partition("=")[0] == "--hf_token" for arg in self.command_line):
            self.hub_token = resolve_token(config_token=top_level, config_source=_CONFIG_FILE_TOKEN)
        else:
            self.hub_token = resolve_token(cli_token=top_level, config_token=config.hub.hf_token)
        # From here on the token lives only in `hub_token`: config.yaml, hparams and training_args.json are
        # written from this config, and W&B records sys.argv.
        config.hf_token = config.hub.hf_token = None
        sys.argv[:] = stops.without_flags(sys.argv, stops.TOKEN_FLAGS)
        if self.hub_token is not None and self.hub_token.source in ("--hf_token", "hub.hf_token", _CONFIG_FILE_TOKEN):
            # Every Hub call of the run uses it (gated base-model downloads too), and so do DDP
            # workers re-launched from the scrubbed sys.argv.
            os.environ["HF_TOKEN"] = self.hub_token.value

    def _resume_a_requeued_slurm_job(self, config) -> None:
        """SLURM requeued this job (preemption, auto-requeue): it goes on where it was."""
        if self.subcommand == "fit" and not config.get("ckpt_path") and int(os.environ.get("SLURM_RESTART_COUNT", 0)):
            config.ckpt_path = "last"
            log.info(
                "theworld: SLURM restarted this job (SLURM_RESTART_COUNT=%s): resuming with --ckpt_path last.",
                os.environ["SLURM_RESTART_COUNT"],
            )

    def _refuse_another_runs_folder(self, config) -> None:
        if self.subcommand == "fit" and not config.get("ckpt_path") and not config.checkpoint.overwrite:
            TrainableCheckpoint.refuse_used_folder(
                TrainableCheckpoint.folder_for(config.checkpoint.dirpath, config.trainer.get("default_root_dir"))
            )

    def _refuse_missing_config(self, config) -> None:
        """``theworld fit`` with neither ``--config`` nor base models would load the production defaults (a GPU
        and a Hub token needed): more likely a forgotten ``--config``."""
        given = self.config.get("config") or config.get("config")
        if not given and not any(arg.startswith("--model.gemma_model_name") for arg in self.command_line):
            raise ConfigError(
                f"theworld {self.subcommand}: no config was given (--config), so every setting would be a default, "
                f"down to the production base models ({TheWorldConfig.gemma_model_name}, a GPU and a Hub token "
                f"needed). The demo (tiny models, CPU, about two minutes): `python -m theworld.testing.demo_assets "
                f"&& theworld {self.subcommand} --config configs/demo.yaml`. DataComp: `theworld {self.subcommand} "
                f"--config configs/datacomp.yaml`."
            )

    @staticmethod
    def _check_accelerator(config) -> None:
        accelerator = config.trainer.get("accelerator")
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise UserError(
                f"trainer.accelerator={accelerator}, but torch sees no GPU on this machine (torch {torch.__version__}, "
                f"CUDA {torch.version.cuda or 'not built in'}). Run on the CPU with --trainer.accelerator cpu (the "
                f"demo's tiny models train there; the production ones are slow), or --trainer.accelerator auto to use "
                f"a GPU wherever there is one. On a GPU machine, install the torch build for its CUDA."
            )

    @staticmethod
    def _check_devices(config) -> None:
        """More devices than the machine has (or 0) stops here, before Lightning starts a process per device; CPU
        processes beyond one are said out loud (each is a DDP rank with its own batch)."""
        devices, accelerator = config.trainer.get("devices"), config.trainer.get("accelerator")
        if not (isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit())):
            return  # auto, -1 (all of them), a list of GPU indices: Lightning's to resolve
        count = int(devices)
        on_gpu = accelerator in ("gpu", "cuda") or (accelerator in ("auto", None) and torch.cuda.is_available())
        have = torch.cuda.device_count() if on_gpu else os.cpu_count() or 1
        kind = "GPUs" if on_gpu else "CPU cores"
        if count == 0 or count > have:
            raise ConfigError(
                f"trainer.devices={count}, but this machine has {have} {kind}: Lightning would start a training "
                f"process per device. Give 1 to {have} (with the CPU, 1: one process already uses every core), "
                f"or auto."
            )
        if not on_gpu and count > 1 and rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            log.warning(
                "theworld: trainer.devices=%d on the CPU starts %d training processes (DDP over gloo), each with "
                "data.batch_size %d: a global batch of %d. One process (--trainer.devices 1) uses every core already.",
                count,
                count,
                config.data.batch_size,
                config.data.batch_size * count * (config.trainer.get("num_nodes") or 1),
            )

    def _loggers_follow_root_dir(self, config) -> None:
        """``--trainer.default_root_dir`` on the command line, with no logger option beside it, moves the logs
        there too: a config's loggers write where its own folder was (configs/demo.yaml: runs/demo)."""
        flags = [arg.partition("=")[0] for arg in self.command_line]
        if "--trainer.default_root_dir" not in flags or any(flag.startswith("--trainer.logger") for flag in flags):
            return
        loggers = config.trainer.get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
            if init_args is not None and "save_dir" in init_args:  # CSV, TensorBoard, W&B, MLflow: all name it so
                init_args.save_dir = config.trainer.default_root_dir

    def _check_output_folders(self, config) -> None:
        """The run's folders can be written (checked before any weight loads, not at the first save); ``fit`` holds
        its checkpoint folder for as long as it runs (theworld.run_lock)."""
        if self.subcommand == "cache_latents":
            return  # it writes only its own --output_dir
        root = config.trainer.get("default_root_dir")
        _refuse_unwritable(Path(root or os.getcwd()), "--trainer.default_root_dir")
        if self.subcommand != "fit":
            return
        dirpath = config.checkpoint.dirpath
        option = "--checkpoint.dirpath" if dirpath else "--trainer.default_root_dir"
        folder = TrainableCheckpoint.folder_for(dirpath, root)
        _refuse_unwritable(folder, option)
        # lightning_utilities sets rank_zero_only.rank on the function at import; its annotations do not declare it
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            self.run_folder_lock = hold_run_folder(folder, option)

    def _check_weight_sources(self, config) -> None:
        """``--ckpt_path`` and ``--model.init_from`` exist and are whole; ``--ckpt_path`` can resume; predict has
        images; validate/predict say when the model they run has not been trained."""
        ckpt_path, init_from = config.get("ckpt_path"), config.model.get("init_from")
        bases = (config.model.gemma_model_name, config.model.cosmos_model_name)
        if any(name.startswith(f"{DEMO_ASSETS}/") for name in bases) and not Path(DEMO_ASSETS).is_dir():
            raise UserError(
                f"This config reads the demo's models and data from {DEMO_ASSETS}/, which is not in {Path.cwd()}. "
                f"Write them with `python -m theworld.testing.demo_assets` (tiny models and synthetic shards, about "
                f"half a minute), or run from the folder that holds {DEMO_ASSETS}/."
            )
        if ckpt_path and ckpt_path != "last" and not Path(ckpt_path).is_dir():
            raise UserError(
                f"--ckpt_path {ckpt_path}: there is no such checkpoint folder "
                f"(relative paths start from {Path.cwd()}). "
                f"Give a checkpoint-N/ or last/ folder, `last` (the newest in checkpoint.dirpath), or "
                f"hf://user/repo[@revision][/folder]."
            )
        # evaluate reads the weights only; the others resume training state with them.
        needs_state = self.subcommand != "evaluate"
        if ckpt_path and ckpt_path != "last" and needs_state and not (Path(ckpt_path) / TRAINING_STATE_NAME).is_file():
            if (Path(ckpt_path) / WEIGHTS_NAME).is_file():
                raise UserError(
                    f"--ckpt_path {ckpt_path} holds trainable weights ({WEIGHTS_NAME}) but no {TRAINING_STATE_NAME}, "
                    f"so it cannot resume a run. Start a new run from its weights with --model.init_from {ckpt_path} "
                    f"in place of --ckpt_path (optimizer, LR schedule, step count and data position start fresh)."
                )
            raise UserError(
                f"--ckpt_path {ckpt_path} is not a TheWorld checkpoint folder (no {WEIGHTS_NAME} and no "
                f"{TRAINING_STATE_NAME}). Give a checkpoint-N/ or last/ folder, `last`, or "
                f"hf://user/repo[@revision][/folder]."
            )
        if init_from and not Path(init_from).is_dir() and not is_hub_repo_id(init_from):
            raise UserError(
                f"--model.init_from {init_from}: there is no such folder "
                f"(relative paths start from {Path.cwd()}). Give "
                f"a checkpoint folder holding model.safetensors (checkpoint-N/, final/), a Hub repo id, or "
                f"hf://user/repo[@revision][/folder]."
            )
        if ckpt_path == "last":
            ckpt_path = newest_checkpoint(
                TrainableCheckpoint.folder_for(config.checkpoint.dirpath, config.trainer.get("default_root_dir"))
            )
        for flag, folder in (("--ckpt_path", ckpt_path), ("--model.init_from", init_from)):
            if folder and Path(folder).is_dir():
                check_intact(folder, flag)
        if self.subcommand == "fit" and ckpt_path and (Path(ckpt_path) / TRAINING_STATE_NAME).is_file():
            _refuse_other_loader_workers(Path(ckpt_path), config.data.num_workers)
        if self.subcommand == "predict" and not config.data.get("predict_data"):
            raise UserError(
                "theworld predict needs the images to caption: add --data.predict_data with a folder, a "
                "glob (my_images/*.jpg) or a list of paths."
            )
        data = config.data
        # Only without train_data does a source that reads dataset_name stream it (training and held-out rows).
        streams_dataset = "dataset_name" in SOURCES[data.source].OPTIONS and data.dataset_name and not data.train_data
        if self.subcommand in ("fit", "validate") and streams_dataset:
            check_dataset(data.dataset_name, self.hub_token)
        if self.subcommand in ("validate", "predict", "evaluate") and not ckpt_path and not init_from:
            log.warning(
                "theworld %s: neither --ckpt_path nor --model.init_from is given, so the model's trainable "
                "weights (the world projector) are untrained: expect %s.",
                self.subcommand,
                "chance-level answers" if self.subcommand == "evaluate" else "random captions",
            )

    def _hub_preflight(self, config) -> HfApi | None:
        """For ``fit`` with ``hub.push_to_hub``: token, repo and write access checked on rank 0 before any weight
        loads (the callback then skips its own preflight). None when the Hub did not answer: pushes retry later."""
        # lightning_utilities sets rank_zero_only.rank on the function at import; its annotations do not declare it
        rank = rank_zero_only.rank  # type: ignore[attr-defined]
        if self.subcommand != "fit" or not config.hub.push_to_hub or rank != 0:
            return None
        try:
            return preflight(config.hub, self.hub_token, resuming=bool(config.get("ckpt_path")))
        except HubUnreachableError as err:
            log.warning("%s Training starts anyway; pushes will be retried.", err)
            return None

    def _pin_bases(self, config) -> None:
        """Records the exact base models in the config: absolute folders, or Hub ids at a commit.

        Resuming or warm-starting keeps the commits the checkpoint was trained on; a revision given here
        overrides them (and says so)."""
        model = config.model
        source = config.get("ckpt_path") or model.get("init_from")
        saved = TheWorldConfig.load(source) if source and (Path(source) / CONFIG_NAME).is_file() else None
        bases = [("gemma", None)] + ([("cosmos", model.cosmos_subfolder)] if model.enable_world else [])
        for base, subfolder in bases:
            name_key, revision_key = f"{base}_model_name", f"{base}_revision"
            name, requested = model[name_key], model[revision_key]
            same_base = saved is not None and _same_base(getattr(saved, name_key), name)
            trained = getattr(saved, revision_key) if same_base else None
            if requested and trained and requested != trained:
                log.warning(
                    "model.%s=%s overrides the commit %s that %s was trained on.",
                    revision_key,
                    requested,
                    trained[:8],
                    source,
                )
            model[name_key], model[revision_key] = pin_base(
                name, f"model.{name_key}", requested or trained, self.hub_token, subfolder=subfolder
            )

    def _resolve_hf_refs(self, config) -> None:
        """Downloads ``hf://`` checkpoints before anything loads, so a bad reference fails in seconds."""
        ckpt_path = config.get("ckpt_path")
        if is_hf_ref(ckpt_path):
            checkpoint = download_resume_checkpoint(ckpt_path, self.hub_token)
            if checkpoint.resumable:
                config.ckpt_path = str(checkpoint.path)
            else:
                resumable, weights_only = resumable_names()
                log.warning(
                    "--ckpt_path %s: the repo has no last-checkpoint/ (it was pushed with hub_strategy %s), so "
                    "training cannot resume exactly. Starting a NEW run from its root model.safetensors (weights "
                    "only, like --model.init_from): optimizer, LR schedule, step count and data position start fresh. "
                    "Push with hub_strategy %s to resume exactly.",
                    ckpt_path,
                    " or ".join(weights_only),
                    " or ".join(resumable),
                )
                config.ckpt_path = None
                config.model.init_from = str(checkpoint.path)
        init_from = config.model.get("init_from")
        if is_hf_ref(init_from):
            token = self.hub_token.value if self.hub_token else None
            revision = download_provenance(init_from, token)  # the weights' history; the weights from that commit
            files = download_files(init_from, [WEIGHTS_NAME], revision=revision, token=token)
            config.model.init_from = str(files[WEIGHTS_NAME].parent)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config_init = self.config_init.get(str(self.subcommand), self.config_init)
        trainer_config = config_init.get("trainer", {})
        callbacks = trainer_config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            callbacks.append(TrainingProgress())
        hub = config_init.get("hub")
        if self.subcommand == "fit" and hub.push_to_hub:
            from theworld.callbacks.hub_sync import HubSyncCallback  # its Hub upload machinery: for pushing runs only

            callbacks.append(HubSyncCallback(hub, token=self.hub_token, api=self.hub_api, run_config=self.run_config))
        return super().instantiate_trainer(**kwargs, callbacks=callbacks)


DEMO_ASSETS = "demo_assets"  # where configs/demo.yaml reads its models and data (theworld.testing.demo_assets)


def _refuse_unwritable(folder: Path, option: str) -> None:
    """Raises UserError when nothing can be made at ``folder``: a regular file on its way, or a place that cannot
    be written (read-only, /proc)."""
    folder = folder.absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(
            f"{option} {folder}: {existing} is a file, so no folder can be made under it. Give a folder path with "
            f"{option}."
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(
            f"{option} {folder}: nothing can be written in {existing} ({err.strerror or err}). Give a folder you "
            f"can write to with {option}."
        ) from None


def _refuse_other_loader_workers(checkpoint: Path, num_workers: int) -> None:
    """The data position of a resume is kept per loader worker: another data.num_workers cannot continue it."""
    saved = saved_loader_workers(checkpoint / TRAINING_STATE_NAME)
    if saved is not None and saved != num_workers:
        raise UserError(
            f"--ckpt_path {checkpoint} was saved by a run with data.num_workers={saved}, and this one has "
            f"{num_workers}. The data position is kept per loader worker, so the run continues exactly where it "
            f"stopped only with the same number: add --data.num_workers {saved}."
        )


def _same_base(saved: str, name: str) -> bool:
    """Whether ``name`` (as configured) is the base ``saved`` in a checkpoint (local folders as absolute paths)."""
    return saved == name or Path(name).expanduser().resolve() == Path(saved)


def _user_message(err: UserError) -> str:
    """The error's own words; one raised in a DataLoader worker arrives wrapped in its traceback."""
    text = str(err).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        text = text.splitlines()[-1].partition(": ")[2]
    return text


class _RedactingFormatter(logging.Formatter):
    """Masks any Hub token a log line quotes (a value the user typed where a path or an id belongs)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _log_to_stderr() -> None:
    """Shows TheWorld's INFO logs (Hub pushes, checkpoints) like Lightning's own, unless logging is configured."""
    logger = logging.getLogger("theworld")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _check_config_files(args: list[str]) -> None:
    """Names the file of a ``--config`` that is not UTF-8, not valid YAML, empty or not a mapping of settings
    (jsonargparse's messages do not)."""
    paths = [value for flag, value in itertools.pairwise(args) if flag in _CONFIG_FLAGS]
    paths += [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                settings = yaml.safe_load(fh)
        except OSError:
            continue  # a missing file: the parser says so itself
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"--config {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}): a "
                f"config is a YAML or JSON text file. Save it as UTF-8 (or give the right file)."
            ) from None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--config {path} is not valid YAML: {' '.join(str(err).split())}. Fix the syntax "
                f"there (indentation, a missing ':', an unclosed bracket or quote)."
            ) from None
        if not isinstance(settings, dict):
            holds = "nothing" if settings is None else f"a {type(settings).__name__}, not a mapping"
            raise ConfigError(
                f"--config {path} holds {holds}. A config maps groups to settings (trainer:, model:, data:, "
                f"checkpoint:, hub:; configs/demo.yaml is one), or is a flat mapping of the Hub upload guide's keys."
            )


def _redact_warnings() -> None:
    """Masks any Hub token a warning quotes, whoever warns."""
    show = warnings.showwarning

    def show_redacted(message, category, filename, lineno, file=None, line=None):
        show(redact(str(message)), category, filename, lineno, file, line)

    warnings.showwarning = show_redacted


def _quiet_known_noise() -> None:
    """Silences messages every run printed that say nothing about the run; progress bars of downloads and uploads
    only on a terminal (in a log file they are a flood of carriage returns)."""
    warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata, at each loader start
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")  # Lightning's pytree use on torch 2.1x
    # TrainableCheckpoint says which folder it searched, and Lightning's hint (save_last=True) does not apply.
    warnings.filterwarnings("ignore", message=r".*ckpt_path=\"last\"\) is set, but there is no last checkpoint")
    # A resume writes into its own run's folder, and a new run into a used one is refused before it starts.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip")
    )  # an advert for Lightning's cloud logger
    logging.getLogger("transformers").addFilter(
        lambda record: "requires torchvision" not in record.getMessage()
    )  # the PIL image processor is the same
    if not sys.stderr.isatty():
        huggingface_hub.utils.disable_progress_bars()
        if "transformers" in sys.modules:  # imported by Lightning's torchmetrics: its bars were set up already
            sys.modules["transformers"].utils.logging.disable_progress_bar()


def main(args: list[str] | None = None) -> None:
    stops.install()  # again after the imports: `python -m theworld.lit.cli`, and a library may have replaced them
    argv = sys.argv[1:] if args is None else args
    _log_to_stderr()
    _redact_warnings()
    _quiet_known_noise()
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    if argv[:1] == ["estimate"]:  # `--json` alone, as scripts write it
        argv = with_json_values(argv)
        if args is None:
            sys.argv[1:] = argv
        else:
            args = argv
    try:
        load_installed_extensions()  # they register their names before the parser takes its choices
        _check_config_files(argv)
        translated = translate_arguments(argv)
        if translated != argv:
            # The guide's config as YAML: given as args (Lightning's warning about args beside sys.argv would print
            # it), while sys.argv keeps the user's command line for W&B and the resume command.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            args = translated
        TheWorldCLI(
            TheWorldModule,
            TheWorldDataModule,
            save_config_kwargs={"overwrite": True},
            trainer_class=TheWorldTrainer,
            parser_class=TheWorldArgumentParser,
            args=args,
            auto_configure_optimizers=False,
        )
    except BaseException as err:
        # A stop raised where a library caught it and raised something else (an import inside diffusers' lazy
        # modules wraps it in a RuntimeError) is still the stop.
        stop = err if isinstance(err, stops.RunStopped) else stops.unfinished_stop()
        stops.exiting(stop)
        if stop is not None:
            _exit_stopped(stop, argv)
        if isinstance(err, UserError):
            # A problem the user can fix (a config value, a base model id, the Hub token or access, the final
            # push, an unsafe checkpoint): the message, not a traceback.
            sys.stderr.write(f"theworld: error: {redact(_user_message(err))}\n")
            sys.exit(err.exit_code)
        raise
    stop = stops.unfinished_stop()  # raised where a library swallowed it
    stops.exiting(stop)
    if stop is not None:
        _exit_stopped(stop, argv)


def _exit_stopped(stop: stops.RunStopped, argv: list[str]) -> NoReturn:
    stops.report(stop, argv)
    sys.exit(stop.code)


if __name__ == "__main__":
    main()
