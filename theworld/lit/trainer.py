"""``TheWorldTrainer``: Lightning's Trainer plus ``cache_latents``, ``estimate`` and ``evaluate``, so each is a
subcommand of ``theworld`` like ``fit`` (same config files, overrides and typo errors)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from theworld.callbacks.checkpoint import TrainableCheckpoint, newest_checkpoint
from theworld.data.latents import LatentCacheError
from theworld.errors import UserError
from theworld.estimate import Estimate, estimate_run
from theworld.evaluate import EvaluationResult
from theworld.latent_cache import write_latent_cache
from theworld.layout import WEIGHTS_NAME
from theworld.lit.strategies import default_wrap_layers

if TYPE_CHECKING:
    from theworld.lit.datamodule import TheWorldDataModule
    from theworld.lit.module import TheWorldModule

_CKPT_PATH = (
    "A checkpoint-N/ or last/ folder, `last` (the newest in checkpoint.dirpath), or "
    "hf://user/repo[@revision][/folder] (its last-checkpoint/, downloaded)"
)
_WEIGHTS_ONLY = (
    "false loads a training_state.pt that holds more than tensors (it could run code): only for a file you trust"
)


class TheWorldTrainer(Trainer):
    """Lightning's Trainer; its subcommands' arguments documented for ``theworld --help``."""

    def fit(  # type: ignore[override]  # ckpt_path: str only, so that the CLI parses it as a plain string
        self,
        model,
        train_dataloaders=None,
        val_dataloaders=None,
        datamodule=None,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """Train the model, saving trainable-only checkpoints (and pushing them to the Hub when configured).

        Args:
            model: The model.
            train_dataloaders: Unused by theworld (the data module provides them).
            val_dataloaders: Unused by theworld (the data module provides them).
            datamodule: The data.
            ckpt_path: Resume exactly from here. {ckpt}.
            weights_only: {weights_only}.
        """
        return super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only=weights_only)

    def validate(  # type: ignore[override]  # ckpt_path: str only, so that the CLI parses it as a plain string
        self,
        model=None,
        dataloaders=None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule=None,
        weights_only: bool | None = None,
    ):
        """Validation loss and held-out caption accuracy of trained weights (--model.init_from or --ckpt_path).

        Args:
            model: The model.
            dataloaders: Unused by theworld (the data module provides them).
            ckpt_path: The weights to validate. {ckpt}.
            verbose: Print the validation metrics.
            datamodule: The data (its val_data).
            weights_only: {weights_only}.
        """
        return super().validate(model, dataloaders, ckpt_path, verbose, datamodule, weights_only=weights_only)

    def predict(  # type: ignore[override]  # ckpt_path: str only, so that the CLI parses it as a plain string
        self,
        model=None,
        dataloaders=None,
        datamodule=None,
        return_predictions: bool | None = None,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
    ):
        """Caption the images of --data.predict_data into --predictions.output_path (JSON lines).

        Args:
            model: The model.
            dataloaders: Unused by theworld (the data module provides them).
            datamodule: The data (its predict_data).
            return_predictions: Keep the captions in memory too (the JSON-lines file has them anyway).
            ckpt_path: The weights to caption with. {ckpt}.
            weights_only: {weights_only}.
        """
        return super().predict(model, dataloaders, datamodule, return_predictions, ckpt_path, weights_only=weights_only)

    def cache_latents(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        output_dir: str,
        split: Literal["train", "val"] = "train",
        batch_size: int = 32,
        num_workers: int | None = None,
        samples_per_shard: int = 1000,
        dtype: Literal["bfloat16", "float32"] = "bfloat16",
        limit: int | None = None,
    ) -> dict:
        """Encode the data through the frozen Cosmos VAE once, into WebDataset shards to train from.

        Reads the data exactly as ``fit`` would (the same ``model:`` and ``data:`` settings); with torchrun each
        rank encodes its share into its own ``shard-r{rank}-*.tar``. Train from the folder with
        ``--data.source webdataset --data.train_data <output_dir>``.

        Args:
            model: The model settings (only the VAE and the world layout are used).
            datamodule: The data to encode.
            output_dir: An empty folder for the shards (or the folder of a killed run, which then resumes).
            split: The training data, or the validation data (``data.val_data`` / ``data.val_samples``).
            batch_size: Images encoded per VAE call.
            num_workers: Loader workers (default: ``data.num_workers``).
            samples_per_shard: Samples per shard (rounded up to a whole batch).
            dtype: Storage dtype of the world tokens; float32 keeps them bit-exact.
            limit: Stop after this many samples (per rank).
        """
        # The CLI hands TheWorld's own module and data module; the annotations stay as jsonargparse reads them.
        config, data = cast("TheWorldModule", model).world_config, cast("TheWorldDataModule", datamodule)
        if not config.freeze_cosmos_vae:
            raise LatentCacheError(
                "model.freeze_cosmos_vae is false: a trained VAE changes its latents every step, "
                "so they cannot be cached. Train from the images instead."
            )
        rank, world_size = self.global_rank, self.world_size
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        source = data.raw_source(train=split == "train", rank=rank, world_size=world_size, one_pass=True)
        summary = write_latent_cache(
            config,
            source,
            output_dir,
            batch_size=batch_size,
            num_workers=data.config.num_workers if num_workers is None else num_workers,
            samples_per_shard=samples_per_shard,
            dtype=dtype,
            limit=limit,
            shard_prefix=f"shard-r{rank}" if world_size > 1 else "shard",
        )
        rank_zero_info(
            f"theworld: cached {summary['samples']} samples in {len(summary['shards'])} shards under "
            f"{os.path.abspath(output_dir)}: {json.dumps(summary['skipped'])} skipped"
        )
        return summary

    def estimate(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        gpu: str = "h100-80gb",
        gpus: int | None = None,
        samples: int | None = None,
        mfu: float | None = None,
        json: bool = False,
    ) -> Estimate:
        """Predict a run's memory per GPU, FLOPs, step time, hours and loader workers, without loading weights.

        One training step of the configured model and batch runs under fake tensors on the CPU (see
        ``theworld.estimate``); ``theworld estimate --config X.yaml`` prints it as a table.

        Args:
            model: The model settings.
            datamodule: The data settings (batch size, caption length, source).
            gpu: The GPU to plan for: h100-80gb, h100-pcie, h200, a100-80gb, a100-40gb or l40s.
            gpus: GPUs in all (default: trainer.devices x trainer.num_nodes).
            samples: Samples to train on, for the run's hours and GPU-hours.
            mfu: Share of the GPU's bf16 peak reached (default: the best measured in bench/RESULTS.md).
            json: Print JSON instead of the table.
        """
        # The CLI hands TheWorld's own module and data module; the annotations stay as jsonargparse reads them.
        config, data = cast("TheWorldModule", model).world_config, cast("TheWorldDataModule", datamodule).config
        return estimate_run(
            config,
            data,
            fsdp_units=default_wrap_layers(),
            gpu=gpu,
            gpus=gpus or self.world_size,
            samples=samples,
            mfu=mfu,
        )

    def evaluate(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        benchmark: str,
        configs: list[str] | None = None,
        split: str | None = None,
        conditions: list[Literal["full", "no_world", "shuffled_world", "gemma", "baseline"]] | None = None,
        protocol: Literal["official", "loglikelihood"] = "official",
        baseline: str | None = None,
        limit: int | None = None,
        batch_size: int = 8,
        bootstrap_samples: int = 10_000,
        seed: int = 0,
        max_new_tokens: int = 16,
        output: str | None = None,
        ckpt_path: str | None = None,
    ) -> EvaluationResult:
        """Benchmark accuracy with the world tokens, without them, with another image's, and of plain Gemma 3.

        Prints a task x condition table (accuracy with 95% Wilson intervals, the official total as ``all``, and the
        world gain: full - shuffled_world, paired bootstrap interval) and writes it with every question's answer as
        JSON. A split whose answers are hidden (a test split) gives predictions only, and the submission file its
        server takes beside the JSON (``<output>.submission.json``).

        Args:
            model: The model settings; the trained weights come from --model.init_from or --ckpt_path.
            datamodule: Unused (the benchmark is the data).
            benchmark: A Hub dataset id (BLINK-Benchmark/BLINK, nyu-visionx/CV-Bench) or a local folder laid out like
                one, in BLINK, CV-Bench, plain multiple-choice or plain VQA (image, question, answer) format.
            configs: The benchmark's configs (tasks) to evaluate (default: all of them, but a config repeating the
                others' questions, CV-Bench's default).
            split: The split (default: val, validation or test, whichever the benchmark has).
            conditions: Any of full, no_world, shuffled_world, gemma, baseline (default: the first four, full and
                gemma for a model without world tokens; baseline too when --baseline is given).
            protocol: official (the benchmark's published evaluation: the dataset's prompt, a generated answer read
                as the benchmark reads it, its official total) or loglikelihood (the likeliest option).
            baseline: A trained control: another checkpoint folder (checkpoint-N/ or final/) of the same model,
                evaluated as the baseline condition, with the gain full - baseline beside the world gain.
            limit: At most this many questions per config: a seeded sample, stratified by task.
            batch_size: Questions per forward pass (loglikelihood: all their options together).
            bootstrap_samples: Resamples for the world gain's paired interval.
            seed: Seed of the --limit sample, the shuffled_world derangement and the bootstrap.
            max_new_tokens: Longest generated answer.
            output: The JSON file (default: <trainer.default_root_dir>/evaluate/<benchmark>.json).
            ckpt_path: Trainable weights to evaluate: a checkpoint-N/, last/ or final/ folder, or `last` (the newest
                in checkpoint.dirpath).
        """
        from theworld.benchmarks import load_benchmarks
        from theworld.checkpoint import load_trainable_weights, saved_step
        from theworld.evaluate import check_conditions, check_protocol, evaluate_benchmarks

        module = cast("TheWorldModule", model)  # the CLI hands TheWorld's own module
        benchmarks = load_benchmarks(benchmark, configs, split, limit, seed)
        chosen = check_conditions(conditions, module.world_config.enable_world, benchmarks, baseline is not None)
        check_protocol(protocol)
        weights: str | Path | None = ckpt_path
        if weights == "last":
            # Lightning assigns Trainer.callbacks in its callback connector; the class does not declare it
            callbacks = self.callbacks  # type: ignore[attr-defined]
            folder = next(c for c in callbacks if isinstance(c, TrainableCheckpoint)).resolve_dirpath(self)
            weights = newest_checkpoint(folder)
            if weights is None:
                raise UserError(
                    f"--ckpt_path last: there is no checkpoint in {folder}. Give the weights to evaluate "
                    f"with --ckpt_path <folder> or --model.init_from <folder> (final/ included)."
                )
        module.configure_model()  # the base models, and the --model.init_from weights
        assert module.model is not None  # built by configure_model
        if weights:
            load_trainable_weights(module.model, str(weights))
            module.weights_step = saved_step(Path(weights) / WEIGHTS_NAME) or 0
        world_model = module.model.to(self.strategy.root_device).eval()
        with self.precision_plugin.forward_context():
            result = evaluate_benchmarks(
                world_model,
                benchmarks,
                chosen,
                batch_size=batch_size,
                bootstrap_samples=bootstrap_samples,
                seed=seed,
                max_new_tokens=max_new_tokens,
                protocol=protocol,
                step=module.weights_step,
                control=baseline,
            )
        path = result.save(output or Path(self.default_root_dir) / "evaluate" / f"{Path(benchmark).name}.json")
        submission = result.submission()
        if submission is not None:
            submitted = path.with_suffix(".submission.json")
            submitted.write_text(submission)
            rank_zero_info(
                f"theworld: the hidden-answer questions' predictions, for the benchmark's server: {submitted}"
            )
        for logger in self.loggers:  # W&B, TensorBoard, CSV: eval/<task>/<condition> at the weights' step
            logger.log_metrics(result.metrics(), step=module.weights_step)
            logger.save()
        print(result.table())
        rank_zero_info(f"theworld: evaluation of {result.questions_per_second:.2f} questions/s written to {path}")
        return result


for _method in (TheWorldTrainer.fit, TheWorldTrainer.validate, TheWorldTrainer.predict):
    assert _method.__doc__ is not None  # each has its docstring above
    _method.__doc__ = _method.__doc__.replace("{ckpt}", _CKPT_PATH).replace("{weights_only}", _WEIGHTS_ONLY)
