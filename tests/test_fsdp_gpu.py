"""FSDP on one CUDA device: trainable-only checkpoints gathered on rank 0, in the single-device format.

The CPU suite (tests/test_ddp.py) runs FSDP over gloo with 2 ranks; this covers what only a GPU
runs: offloading the gathered tensors to CPU on rank 0 and the CUDA device placement. Run it with
``python -m pytest -m gpu tests/test_fsdp_gpu.py`` (well under a minute on an H100).
"""

from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from theworld import TheWorld
from theworld.callbacks import TrainableCheckpoint
from theworld.checkpoint import save_pretrained
from theworld.lit.datamodule import TheWorldDataModule
from theworld.lit.module import TheWorldModule
from theworld.lit.strategies import TheWorldFSDPStrategy

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


MODEL = dict(world_image_size=64, freeze_gemma_language=False, frozen_dtype="float32")


@pytest.fixture(scope="module")
def start(demo_dir, tmp_path_factory) -> Path:
    """Trainable weights every run starts from: a module built on the GPU draws its projector from the
    CUDA generator (Lightning's single-device init context), under FSDP from the CPU one."""
    assets = demo_dir / "demo_assets"
    model = TheWorld(str(assets / "gemma-3-tiny"), str(assets / "cosmos-tiny"), **MODEL)
    return save_pretrained(model, tmp_path_factory.mktemp("start") / "weights")


def train(demo_dir: Path, start: Path, root: Path, strategy, precision: str = "32-true",
          ckpt_path: Path | None = None) -> TheWorldModule:
    """4 steps of the demo (language model unfrozen, as in configs/demo.yaml), checkpoints every 2 in ``root``."""
    assets = demo_dir / "demo_assets"
    L.seed_everything(0)
    module = TheWorldModule(
        gemma_model_name=str(assets / "gemma-3-tiny"), cosmos_model_name=str(assets / "cosmos-tiny"),
        init_from=str(start), learning_rate=3e-3, warmup_steps=10, **MODEL,
    )
    data = TheWorldDataModule(train_data=str(assets / "data/train-00000.tar"), batch_size=4, num_workers=0,
                              max_caption_tokens=32, min_image_size=16)
    trainer = L.Trainer(
        accelerator="gpu", devices=1, strategy=strategy, precision=precision, max_steps=4, gradient_clip_val=1.0,
        limit_val_batches=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root,
        callbacks=[TrainableCheckpoint(dirpath=str(root / "checkpoints"), every_n_train_steps=2, save_top_k=-1)],
    )
    trainer.fit(module, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return module


def assert_same_format(a: Path, b: Path, atol: float):
    """Same files, keys, shapes and fp32 dtypes (optimizer state included), values within ``atol``."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].dtype == wb[key].dtype == torch.float32 and wa[key].shape == wb[key].shape, key
        assert torch.allclose(wa[key], wb[key], atol=atol), key
    assert (a / "config.json").read_text() == (b / "config.json").read_text()
    if a.name == "final":  # weights only
        return
    sa, sb = (torch.load(p / "training_state.pt", weights_only=False)["optimizer_states"][0] for p in (a, b))
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for index, state in sa["state"].items():
        for name, value in state.items():
            assert value.shape == sb["state"][index][name].shape, (index, name)
            assert torch.allclose(value, sb["state"][index][name], atol=atol), (index, name)


@pytest.fixture(scope="module")
def single_device(demo_dir, start, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("single")
    train(demo_dir, start, root, "auto")
    return root / "checkpoints"


@pytest.fixture(scope="module")
def fsdp(demo_dir, start, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fsdp")
    train(demo_dir, start, root, TheWorldFSDPStrategy())
    return root / "checkpoints"


def test_fsdp_checkpoints_have_the_single_device_format(single_device, fsdp):
    # Values only to about the learning rate: Adam's first steps move a weight by about +-lr whatever
    # its gradient's size, so float-level differences between FSDP's and the plain CUDA kernels can
    # flip a step. The gather is checked value for value against DDP with 2 real shards on CPU
    # (tests/test_ddp.py).
    for folder in ("checkpoint-2", "checkpoint-4", "final"):
        assert_same_format(single_device / folder, fsdp / folder, atol=3e-2)


def test_fsdp_resumes_its_own_checkpoint_exactly(demo_dir, start, fsdp, tmp_path):
    train(demo_dir, start, tmp_path, TheWorldFSDPStrategy(), ckpt_path=fsdp / "checkpoint-2")
    for folder in ("checkpoint-4", "final"):  # optimizer state and weights
        assert_same_format(fsdp / folder, tmp_path / "checkpoints" / folder, atol=1e-5)


def test_fsdp_with_bf16_mixed_keeps_fp32_weights_and_buffers(demo_dir, start, single_device, tmp_path):
    module = train(demo_dir, start, tmp_path, TheWorldFSDPStrategy(), precision="bf16-mixed")
    # Rotary frequencies and VAE latent statistics are not rounded to bf16.
    assert {n: b.dtype for n, b in module.named_buffers() if b.is_floating_point() and b.dtype != torch.float32} == {}
    weights = load_file(tmp_path / "checkpoints/final/model.safetensors")
    assert weights.keys() == load_file(single_device / "final/model.safetensors").keys()
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values())
