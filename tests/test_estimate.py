"""``theworld estimate``'s fake-tensor step against a real step of the tiny model, and the CLI end to end."""

from __future__ import annotations

import json

import pytest
from torch._subclasses.fake_tensor import FakeTensorMode

from theworld.config import TheWorldConfig
from theworld.estimate import StepShape, _WeightlessWorld, step_flops, step_memory
from theworld.model import TheWorld
from tests.support.cli_runs import REPO, theworld


@pytest.fixture(scope="module")
def tiny_config(tiny_models):
    gemma_dir, cosmos_dir = tiny_models
    return TheWorldConfig(gemma_model_name=str(gemma_dir), cosmos_model_name=str(cosmos_dir), world_image_size=64,
                          frozen_dtype="bfloat16")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fake_step_predicts_the_real_steps_peak_memory_and_flops(tiny_config, checkpointing):
    shape = StepShape(batch_size=2, seq_len=120, labelled=9)
    fake_mode = FakeTensorMode()
    weightless = _WeightlessWorld.build(tiny_config, fake_mode)
    predicted = step_memory(weightless, fake_mode, shape, checkpointing)
    predicted_flops = step_flops(weightless, fake_mode, shape, checkpointing)

    real = TheWorld.from_config(tiny_config)  # real tiny weights, a real CPU step
    measured = step_memory(real, None, shape, checkpointing)
    measured_flops = step_flops(real, None, shape, checkpointing)

    assert predicted.weights == measured.weights
    assert predicted.optimizer == measured.optimizer
    assert predicted.peak == pytest.approx(measured.peak, rel=0.02)
    assert predicted_flops == measured_flops


def test_estimate_subcommand_prints_json_for_the_demo_config(demo_dir):
    result = theworld("estimate", "--config", REPO / "configs/demo.yaml", "--gpu", "h200", "--gpus", "2",
                      "--samples", "1000", "--json", cwd=demo_dir)
    assert result.returncode == 0, result.stderr
    estimate = json.loads(result.stdout[result.stdout.index("{"):])
    assert estimate["gpus"] == 2 and estimate["gpu"] == "h200"
    assert estimate["memory"]["ddp+ckpt"]["total"] <= estimate["memory"]["ddp"]["total"]
    assert estimate["gpu_hours"] == pytest.approx(2 * estimate["hours"])
