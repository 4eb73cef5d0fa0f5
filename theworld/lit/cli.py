"""``theworld``: the LightningCLI entry point (``fit``, ``validate``, ``predict``, ``--print_config``)."""

from __future__ import annotations

import json
import logging
import os
import sys

import torch
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from theworld.callbacks.checkpoint import TrainableCheckpoint
from theworld.callbacks.hub_sync import HubSyncCallback
from theworld.callbacks.predictions import JsonlPredictionWriter
from theworld.checkpoint import WEIGHTS_NAME
from theworld.hub import (
    HubConfig,
    HubError,
    download_files,
    download_resume_checkpoint,
    is_hf_ref,
    is_secret_key,
    redact_secrets,
    resolve_token,
)
from theworld.lit.datamodule import TheWorldDataModule
from theworld.lit.module import TheWorldModule

log = logging.getLogger(__name__)

_TOKEN_FLAGS = ("--hf_token", "--hub.hf_token")


class TheWorldCLI(LightningCLI):
    """Adds the ``checkpoint:`` and ``hub:`` groups and the top-level ``--hf_token`` flag to Lightning's CLI.

    With ``hub.push_to_hub`` the ``fit`` trainer gets a :class:`HubSyncCallback`. ``--ckpt_path`` and
    ``--model.init_from`` accept ``hf://user/repo[@revision][/folder]``. The token is taken out of the
    config before anything is saved or logged.
    """

    def add_arguments_to_parser(self, parser) -> None:
        # Always on: the `checkpoint:` group configures the trainable-only checkpoint callback.
        parser.add_lightning_class_args(TrainableCheckpoint, "checkpoint")
        parser.add_lightning_class_args(JsonlPredictionWriter, "predictions")
        parser.add_dataclass_arguments(HubConfig, "hub")
        parser.add_argument(
            "--hf_token",
            type=str | None,
            default=None,
            help="Hugging Face token; wins over hub.hf_token, $HF_TOKEN and the cached `hf auth login` token.",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        self.hub_token = resolve_token(cli_token=config.get("hf_token"), config_token=config.hub.hf_token)
        # From here on the token lives only in `hub_token`: config.yaml, hparams and training_args.json are
        # written from this config, and W&B records sys.argv.
        config.hf_token = config.hub.hf_token = None
        _hide_token_flags(sys.argv)
        if self.hub_token is not None and self.hub_token.source in ("--hf_token", "hub.hf_token"):
            # Every Hub call of the run uses it (gated base-model downloads too), and so do DDP
            # workers re-launched from the scrubbed sys.argv.
            os.environ["HF_TOKEN"] = self.hub_token.value
        dumped = self._parser(self.subcommand).dump(config, format="json", skip_none=False)
        self.run_config = redact_secrets(json.loads(dumped))
        self._resolve_hf_refs(config)

    def _resolve_hf_refs(self, config) -> None:
        """Downloads ``hf://`` checkpoints before anything loads, so a bad reference fails in seconds."""
        ckpt_path = config.get("ckpt_path")
        if is_hf_ref(ckpt_path):
            checkpoint = download_resume_checkpoint(ckpt_path, self.hub_token)
            if checkpoint.resumable:
                config.ckpt_path = str(checkpoint.path)
            else:
                log.warning(
                    "--ckpt_path %s: the repo has no last-checkpoint/ (it was pushed with hub_strategy every_save or "
                    "end), so training cannot resume exactly. Starting a NEW run from its root model.safetensors "
                    "(weights only, like --model.init_from): optimizer, LR schedule, step count and data position "
                    "start fresh. Push with hub_strategy checkpoint or all_checkpoints to resume exactly.", ckpt_path
                )
                config.ckpt_path = None
                config.model.init_from = str(checkpoint.path)
        init_from = config.model.get("init_from")
        if is_hf_ref(init_from):
            files = download_files(init_from, [WEIGHTS_NAME], token=self.hub_token.value if self.hub_token else None)
            config.model.init_from = str(files[WEIGHTS_NAME].parent)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        hub = self._get(self.config_init, "hub")
        if self.subcommand == "fit" and hub.push_to_hub:
            configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
            sync = HubSyncCallback.from_config(hub, self.hub_token, run_config=self.run_config)
            kwargs["callbacks"] = [*(configured if isinstance(configured, list) else [configured]), sync]
        return super().instantiate_trainer(**kwargs)


class RedactedSaveConfig(SaveConfigCallback):
    """Lightning's config.yaml writer, with every credential-like value (``*_token``, ``api_key``...) nulled."""

    def __init__(self, parser, config: Namespace, *args, **kwargs):
        super().__init__(parser, _without_secrets(config), *args, **kwargs)


def _without_secrets(value):
    if isinstance(value, Namespace):
        clone = value.clone()
        for key, item in vars(value).items():
            setattr(clone, key, None if is_secret_key(key) else _without_secrets(item))
        return clone
    if isinstance(value, dict):
        return {key: None if is_secret_key(key) else _without_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_secrets(item) for item in value]
    return value


def _hide_token_flags(argv: list[str]) -> None:
    """Removes ``--hf_token X`` / ``--hf_token=X`` (and ``--hub.hf_token``) from ``argv``, in place."""
    kept, skip_value = [], False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg in _TOKEN_FLAGS:
            skip_value = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in _TOKEN_FLAGS)):
            kept.append(arg)
    argv[:] = kept


def _log_to_stderr() -> None:
    """Shows TheWorld's INFO logs (Hub pushes, checkpoints) like Lightning's own, unless logging is configured."""
    logger = logging.getLogger("theworld")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(args: list[str] | None = None) -> None:
    _log_to_stderr()
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    try:
        TheWorldCLI(
            TheWorldModule,
            TheWorldDataModule,
            save_config_callback=RedactedSaveConfig,
            save_config_kwargs={"overwrite": True},
            args=args,
            auto_configure_optimizers=False,
        )
    except HubError as err:
        # A Hub problem the user can fix (bad token, no access, the final push failed): the message, not a traceback.
        sys.exit(f"theworld: error: {err}")


if __name__ == "__main__":
    main()
