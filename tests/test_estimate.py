"""``theworld estimate``'s fake-tensor step against a real step of the tiny model, and the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from theworld.config import TheWorldConfig
from theworld.data.config import DataConfig
from theworld.errors import ConfigError
from theworld.estimate import (
    StepShape,
    adamw_with_state,
    build_weightless,
    estimate_run,
    fake_batch,
    set_checkpointing,
    step_flops,
    step_memory,
    train_step,
)
from theworld.model import TheWorld
from tests.support.cli_runs import REPO, theworld


@pytest.fixture(scope="module")
def tiny_config(tiny_models):
    gemma_dir, cosmos_dir = tiny_models
    return TheWorldConfig(gemma_model_name=str(gemma_dir), cosmos_model_name=str(cosmos_dir), world_image_size=64,
                          frozen_dtype="bfloat16")


def cuda_block(tensor: torch.Tensor) -> int:
    """A tensor's bytes as CUDA's allocator (and the estimate) counts them: rounded up to 512."""
    return -(-tensor.untyped_storage().nbytes() // 512) * 512


def allocator_peak_of_step(world, shape: StepShape, checkpointing: bool) -> int:
    """Peak bytes above the start of one real CPU training step, from the CPU allocator's records (profiler)."""
    set_checkpointing(world, checkpointing)
    optimizer, batch = adamw_with_state(world), fake_batch(world, shape)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        train_step(world, batch, optimizer)
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fake_step_predicts_the_real_steps_peak_memory_and_flops(tiny_config, checkpointing):
    # Long enough that the CPU attention kernel's own fixed buffers (which no tensor accounts for) are noise.
    shape = StepShape(batch_size=4, seq_len=600, labelled=9)
    fake_mode = FakeTensorMode()
    weightless = build_weightless(tiny_config, fake_mode)
    predicted = step_memory(weightless, fake_mode, shape, checkpointing)
    predicted_flops = step_flops(weightless, fake_mode, shape, checkpointing)

    real = TheWorld.from_config(tiny_config)  # real tiny weights, real CPU steps
    tensors = {id(t): t for t in [*real.parameters(), *real.buffers()]}.values()
    assert predicted.weights == sum(cuda_block(t) for t in tensors)
    batch_bytes = sum(cuda_block(t) for t in fake_batch(real, shape).values())
    measured = allocator_peak_of_step(real, shape, checkpointing)
    assert predicted.activations - batch_bytes == pytest.approx(measured, rel=0.02)
    assert predicted_flops == step_flops(real, None, shape, checkpointing)


def test_estimate_subcommand_prints_json_for_the_demo_config(demo_dir):
    result = theworld("estimate", "--config", REPO / "configs/demo.yaml", "--gpu", "h200", "--gpus", "2",
                      "--samples", "1000", "--json", cwd=demo_dir)
    assert result.returncode == 0, result.stderr
    estimate = json.loads(result.stdout[result.stdout.index("{"):])
    assert estimate["gpus"] == 2 and estimate["gpu"] == "h200"
    assert estimate["memory"]["ddp+ckpt"]["total"] <= estimate["memory"]["ddp"]["total"]
    assert estimate["gpu_hours"] == pytest.approx(2 * estimate["hours"])


def test_an_unknown_gpu_names_the_known_ones(tiny_config):
    with pytest.raises(ConfigError, match="h100-80gb, h100-pcie, h200"):
        estimate_run(tiny_config, DataConfig(), fsdp_units=set(), gpu="v100")
