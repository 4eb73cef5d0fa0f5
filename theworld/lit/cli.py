"""``theworld``: the LightningCLI entry point (``fit``, ``validate``, ``predict``, ``--print_config``)."""

from __future__ import annotations

import sys

import torch
from lightning.pytorch.cli import LightningCLI

from theworld.callbacks.checkpoint import TrainableCheckpoint
from theworld.callbacks.predictions import JsonlPredictionWriter
from theworld.hub import HubConfig
from theworld.lit.datamodule import TheWorldDataModule
from theworld.lit.module import TheWorldModule


class TheWorldCLI(LightningCLI):
    """Adds the ``checkpoint:`` and ``hub:`` groups and the top-level ``--hf_token`` flag to Lightning's CLI."""

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


def main(args: list[str] | None = None) -> None:
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    TheWorldCLI(
        TheWorldModule,
        TheWorldDataModule,
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
