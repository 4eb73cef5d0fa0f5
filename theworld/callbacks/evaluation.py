"""``BenchmarkEvaluation``: a benchmark subset evaluated during ``fit``, every N steps and at the end of training;
the result goes to the loggers, ``<default_root_dir>/evaluation/step-N.json``, the run summary (so to the model card
and the Hub repo) and the checkpoints (``evaluation.json`` in each checkpoint folder and in ``final/``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from theworld.run_summary import BenchmarkRecord

if TYPE_CHECKING:
    from theworld.benchmarks import Benchmark
    from theworld.lit.module import TheWorldModule


class BenchmarkEvaluation(Callback):
    """Evaluates ``benchmark`` (see ``theworld evaluate``) on the weights being trained.

    Every rank answers the same questions (under FSDP each forward needs every rank); rank 0 logs
    ``eval/<task>/<condition>`` and ``eval/<task>/world_gain``, and the result travels with the run summary: the card's
    benchmark table and ``model-index`` entries, ``evaluation/results.json`` in the Hub repo, the checkpoints.

    Example (``configs/demo_spatial.yaml``)::

        trainer:
          callbacks:
            - class_path: theworld.callbacks.BenchmarkEvaluation
              init_args:
                benchmark: demo_assets/spatial_bench
                every_n_train_steps: 500
                limit: 64
    """

    def __init__(
        self,
        benchmark: str,
        configs: list[str] | None = None,
        split: str | None = None,
        conditions: list[str] | None = None,
        protocol: str = "official",
        every_n_train_steps: int = 0,
        limit: int | None = 64,
        batch_size: int = 8,
        bootstrap_samples: int = 10_000,
        seed: int = 0,
    ):
        """
        Args:
            benchmark: A Hub dataset id or a local folder laid out like one (BLINK, CV-Bench or plain VQA format).
            configs: Its configs (tasks) to evaluate (default: all).
            split: The split (default: val, validation or test, whichever it has).
            conditions: Any of full, no_world, shuffled_world, gemma (default: full and shuffled_world, whose
                difference is the world gain; gemma loads the base model a second time).
            protocol: official (the benchmark's published evaluation) or loglikelihood (the likeliest option).
            every_n_train_steps: Evaluate every this many optimizer steps (0: only at the end of training).
            limit: At most this many questions per config (a seeded sample stratified by task), to keep training fast.
            batch_size: Questions per forward pass.
            bootstrap_samples: Resamples for the world gain's paired interval.
            seed: Seed of the sample, the shuffled_world derangement and the bootstrap.
        """
        self.benchmark = benchmark
        self.configs = configs
        self.split = split
        self.conditions = conditions or ["full", "shuffled_world"]
        self.protocol = protocol
        self.every_n_train_steps = every_n_train_steps
        self.limit = limit
        self.batch_size = batch_size
        self.bootstrap_samples = bootstrap_samples
        self.seed = seed
        self._benchmarks: list[Benchmark] | None = None
        self._evaluated_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Read (and refused if unreadable) before any weight loads: configure_model runs after setup.
        if stage == "fit" and self._benchmarks is None:
            from theworld.benchmarks import load_benchmarks
            from theworld.evaluate import check_conditions, check_protocol

            check_protocol(self.protocol)
            self._benchmarks = load_benchmarks(self.benchmark, self.configs, self.split, self.limit, self.seed)
            module = cast("TheWorldModule", pl_module)  # this callback serves TheWorldModule only
            self.conditions = check_conditions(self.conditions, module.world_config.enable_world, self._benchmarks)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        every = self.every_n_train_steps
        if every and trainer.global_step % every == 0 and trainer.global_step != self._evaluated_step:
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before TrainableCheckpoint writes final/ (Lightning runs checkpoint callbacks last): the final push has it.
        if trainer.global_step != self._evaluated_step:
            self._evaluate(trainer, pl_module)

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from theworld.evaluate import evaluate_benchmarks

        module = cast("TheWorldModule", pl_module)  # this callback serves TheWorldModule only
        model, step = module.model, trainer.global_step
        assert model is not None and self._benchmarks is not None, "set up for fit"
        was_training = model.training
        model.eval()
        try:
            with trainer.precision_plugin.forward_context():
                result = evaluate_benchmarks(
                    model,
                    self._benchmarks,
                    self.conditions,
                    batch_size=self.batch_size,
                    bootstrap_samples=self.bootstrap_samples,
                    seed=self.seed,
                    protocol=self.protocol,
                    step=step,
                )
        finally:
            model.train(was_training)
        self._evaluated_step = step
        module.benchmark = BenchmarkRecord(step, result)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(result.metrics(), step=step)
            saved = result.save(Path(trainer.default_root_dir) / "evaluation" / f"step-{step}.json")
            rank_zero_info(f"theworld: step {step}: benchmark, every answer in {saved}\n{result.table()}")
