"""The latent cache: Cosmos world tokens computed once, stored in shards, and trained from."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from support.cli_runs import REPO, fit, theworld

from theworld import TheWorld
from theworld.config import TheWorldConfig
from theworld.data.latents import LatentCacheError, pack_world_latents, unpack_world_latents
from theworld.data.processing import TheWorldProcessor, load_gemma_processor
from theworld.data.webdataset import WebDatasetSource
from theworld.latent_cache import write_latent_cache
from theworld.lit.datamodule import SampleTransform
from theworld.testing.synthetic import write_webdataset_shards


def cache_cli(*args, cwd):
    return theworld("cache_latents", "--config", REPO / "configs/demo.yaml", *args, cwd=cwd, timeout=300)


def demo_config(demo_dir: Path, **overrides) -> TheWorldConfig:
    assets = demo_dir / "demo_assets"
    options = {"world_image_size": 64, "world_patch_size": 2, **overrides}
    return TheWorldConfig(gemma_model_name=str(assets / "gemma-3-tiny"), cosmos_model_name=str(assets / "cosmos-tiny"),
                          **options)


@pytest.fixture(scope="module")
def float32_cache(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("latents")
    shards = str(demo_dir / "demo_assets/data/val-00000.tar")  # 64 samples
    summary = write_latent_cache(demo_config(demo_dir), WebDatasetSource(shards), out, batch_size=5, num_workers=0,
                                 samples_per_shard=16, dtype="float32")
    return out, shards, summary


def test_cache_shards_keep_every_sample_with_its_original_image_and_caption(float32_cache):
    out, shards, summary = float32_cache
    originals = {s["key"]: s for s in WebDatasetSource(shards)}
    cached = {s["key"]: s for s in WebDatasetSource(str(out))}
    assert summary["samples"] == len(originals) == len(cached)
    assert summary["shards"] == sorted(p.name for p in out.glob("shard-*.tar"))
    # Shards close on batch boundaries: 16 a shard rounds up to 4 batches of 5.
    assert len(summary["shards"]) == -(-len(originals) // 20)
    assert json.loads((out / "shard-cache.json").read_text())["samples"] == len(originals)
    for key, sample in cached.items():
        assert sample["image_bytes"] == originals[key]["image_bytes"] and sample["text"] == originals[key]["text"]
        assert "world_latents" in sample


def test_a_killed_cache_run_resumes_after_its_last_complete_shard(demo_dir, tmp_path, monkeypatch):
    import theworld.latent_cache as latent_cache

    shards = write_webdataset_shards(tmp_path / "data", num_shards=2, samples_per_shard=24, seed=3)
    config = demo_config(demo_dir)
    args = dict(batch_size=4, num_workers=2, samples_per_shard=8, dtype="float32")
    straight = write_latent_cache(config, WebDatasetSource(shards), tmp_path / "straight", **args)

    add = latent_cache._ShardWriter.add
    written = []

    def crash_after_21(writer, key, members):
        if len(written) == 21:  # inside the third shard, after two completed ones
            raise KeyboardInterrupt
        written.append(key)
        add(writer, key, members)

    monkeypatch.setattr(latent_cache._ShardWriter, "add", crash_after_21)
    with pytest.raises(KeyboardInterrupt):
        write_latent_cache(config, WebDatasetSource(shards), tmp_path / "killed", **args)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "killed").glob("shard-*.tar")) == ["shard-00000.tar", "shard-00001.tar"]
    assert (tmp_path / "killed/shard-00002.tar.partial").exists()

    resumed = write_latent_cache(config, WebDatasetSource(shards), tmp_path / "killed", **args)
    assert resumed["samples"] == straight["samples"] == 48 and resumed["shards"] == straight["shards"]
    assert not list((tmp_path / "killed").glob("*.partial")) and not (tmp_path / "killed/shard-progress.pt").exists()
    for name in straight["shards"]:  # same samples, same order, same bytes
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()

    with pytest.raises(LatentCacheError, match="finished cache"):
        write_latent_cache(config, WebDatasetSource(shards), tmp_path / "killed", **args)


def test_training_batches_from_the_cache_give_the_loss_of_the_images(float32_cache, demo_dir):
    out, shards, _ = float32_cache
    config = demo_config(demo_dir)
    torch.manual_seed(0)
    model = TheWorld.from_config(config)
    processor = TheWorldProcessor(load_gemma_processor(config.gemma_model_name), world_tokens=16, world_image_size=64)
    transform = SampleTransform(processor, config)
    from_images = [transform(s) for s in WebDatasetSource(shards)][:6]
    cached = {s["key"]: s for s in WebDatasetSource(str(out), transform=transform)}
    from_cache = [cached[example["key"]] for example in from_images]
    assert all("world_latents" in e and "world_pixels" not in e for e in from_cache)
    with torch.no_grad():
        image_loss = model(**processor.collate(from_images))["loss"]
        cache_batch = processor.collate(from_cache)
        assert "world_pixels" not in cache_batch
        cache_loss = model(**cache_batch)["loss"]
    torch.testing.assert_close(cache_loss, image_loss, rtol=1e-5, atol=1e-5)


def test_a_cache_for_another_world_layout_is_refused_by_name(demo_dir):
    packed = pack_world_latents(torch.zeros(16, 64), demo_config(demo_dir))
    with pytest.raises(LatentCacheError, match=r"world_patch_size: cache 2 vs model 1.*theworld cache_latents"):
        unpack_world_latents(packed, demo_config(demo_dir, world_patch_size=1))


def test_cached_latents_need_a_frozen_vae(demo_dir):
    torch.manual_seed(0)
    model = TheWorld.from_config(demo_config(demo_dir, freeze_cosmos_vae=False))
    proc = model.processor
    example = proc(Image.new("RGB", (64, 64), (200, 0, 0)), caption="a red square", world_latents=torch.zeros(16, 64))
    with pytest.raises(ValueError, match="freeze_cosmos_vae is false"):
        model(**proc.collate([example]))


def test_cache_latents_cli_then_fit_from_the_cache(demo_dir, tmp_path):
    out = tmp_path / "latents"
    result = cache_cli("--output_dir", out, "--data.train_data", "demo_assets/data/val-00000.tar",
                       "--num_workers", "0", "--samples_per_shard", "8", cwd=demo_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "shard-cache.json").read_text())
    assert f"cached {summary['samples']} samples" in result.stdout + result.stderr
    assert summary["samples"] > 0 and summary["dtype"] == "bfloat16" and summary["world_patch_size"] == 2

    again = cache_cli("--output_dir", out, "--num_workers", "0", cwd=demo_dir)
    assert again.returncode != 0 and "already holds" in again.stderr and "Traceback" not in again.stderr

    root = tmp_path / "run"
    trained = fit(demo_dir, "--data.train_data", out, "--data.val_data", "null", "--data.num_workers", "0",
                  "--trainer.max_steps", "3", "--trainer.default_root_dir", root,
                  "--trainer.logger.init_args.save_dir", root)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (root / "checkpoints/final/model.safetensors").exists()

    wrong = fit(demo_dir, "--data.train_data", out, "--data.val_data", "null", "--model.world_image_size", "32",
                "--trainer.max_steps", "1", "--trainer.default_root_dir", tmp_path / "wrong",
                "--trainer.logger.init_args.save_dir", tmp_path / "wrong")
    assert wrong.returncode != 0
    # Raised in a loader worker, shown as the one-line error, not the worker's traceback.
    assert "theworld: error: The latent cache was made for another world layout (world_image_size: cache 64 vs " \
           "model 32)" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_cache_latents_refuses_a_trainable_vae(demo_dir, tmp_path):
    result = cache_cli("--output_dir", tmp_path / "x", "--model.freeze_cosmos_vae", "false", cwd=demo_dir)
    assert result.returncode != 0 and "freeze_cosmos_vae is false" in result.stderr
    assert not (tmp_path / "x").exists()
