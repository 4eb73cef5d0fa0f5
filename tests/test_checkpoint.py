"""Trainable-only checkpoints: contents, size, exact resume, crash safety, loading, predict."""

import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from support.cli_runs import REPO, SHORT, assert_resumed, assert_same_weights, fit, provenance, theworld

from theworld import TheWorld
from theworld.checkpoint import save_pretrained


def test_checkpoint_folder_holds_trainable_tensors_and_training_state(straight_run, tiny_models):
    ckpt = straight_run / "checkpoints/checkpoint-4"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "provenance.json",
                                                      "training_state.pt"]
    # The samples of steps 0-3 (8 a step, none twice), as the shards' keys; final/ has all 8 steps'.
    rows = provenance(ckpt)
    assert [step for step, _, _ in rows] == [s for s in range(4) for _ in range(8)] and {r for _, r, _ in rows} == {0}
    assert len({key for _, _, key in rows}) == 32 and all(key.isdigit() for _, _, key in rows)
    assert provenance(straight_run / "checkpoints/final")[:32] == rows
    config = json.loads((ckpt / "config.json").read_text())
    assert config["world_image_size"] == 64 and config["freeze_gemma_language"] is False
    state = torch.load(ckpt / "training_state.pt", weights_only=False)
    assert "state_dict" not in state and state["global_step"] == 4
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"], "data position is saved"
    # Adam's two moments per trainable tensor and nothing bigger: no frozen weight hides in here.
    weights = load_file(ckpt / "model.safetensors")
    trainable_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    moment_bytes = sum(
        v.numel() * v.element_size()
        for s in state["optimizer_states"][0]["state"].values() for k, v in s.items() if k != "step"
    )
    assert moment_bytes == 2 * trainable_bytes
    assert (straight_run / "checkpoints/last").resolve().name == "checkpoint-8"
    assert (straight_run / "checkpoints/final/model.safetensors").exists()


def test_resume_reproduces_the_straight_run_exactly(straight_run, demo_dir, tmp_path):
    result = fit(demo_dir, *SHORT, "--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir",
                 tmp_path, "--ckpt_path", straight_run / "checkpoints/checkpoint-4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(straight_run / "checkpoints/final", tmp_path / "checkpoints/final")
    assert_resumed(tmp_path, straight_run, from_step=4)


def test_sigkill_mid_save_resumes_from_the_last_complete_checkpoint(straight_run, demo_dir, tmp_path):
    marker = tmp_path / "saving.marker"
    args = [*SHORT, "--checkpoint.every_n_train_steps", "2", "--trainer.default_root_dir", tmp_path,
            "--trainer.logger.init_args.save_dir", tmp_path, "--trainer.callbacks+=slow_save.HangOnSave",
            "--trainer.callbacks.init_args.hang_at", "2", "--trainer.callbacks.init_args.marker", marker]
    proc = fit(demo_dir, *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpts = tmp_path / "checkpoints"
    names = sorted(p.name for p in ckpts.iterdir())
    assert "checkpoint-2" in names and "checkpoint-4" not in names, names
    assert any(".tmp-" in n for n in names), "the killed save was mid-write"
    assert (ckpts / "last").resolve().name == "checkpoint-2"

    result = fit(demo_dir, *SHORT, "--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir",
                 tmp_path, "--ckpt_path", "last")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(".tmp-" in p.name for p in ckpts.iterdir()), "stale temporaries are cleaned"
    assert_same_weights(straight_run / "checkpoints/final", ckpts / "final")
    assert_resumed(tmp_path, straight_run, from_step=2)


def test_projection_only_checkpoint_size_is_the_trainable_bytes(tiny_models, tmp_path):
    model = TheWorld(*tiny_models, world_image_size=64)
    path = save_pretrained(model, tmp_path / "ckpt") / "model.safetensors"
    trainable = model.trainable_state_dict()
    assert set(load_file(path)) == {"world_token_embeds", *[k for k in trainable if k.startswith("projector.")]}
    header = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert path.stat().st_size == header + sum(t.numel() * t.element_size() for t in trainable.values())


def test_identical_weights_give_byte_identical_safetensors(tiny_models, tmp_path):
    """The Hub deduplicates by hash, and hash comparisons tell whether weights changed: the same weights must
    give the same bytes (safetensors writes its metadata from a hash map, in a new order each time)."""
    model = TheWorld(*tiny_models, world_image_size=64)
    files = [(save_pretrained(model, tmp_path / f"ckpt-{i}") / "model.safetensors").read_bytes() for i in range(5)]
    assert all(data == files[0] for data in files[1:])
    assert set(load_file(tmp_path / "ckpt-0/model.safetensors")) == set(model.trainable_state_dict())


def test_unfrozen_language_model_is_saved_but_not_the_vision_tower(tiny_models, tmp_path):
    model = TheWorld(*tiny_models, world_image_size=64, freeze_gemma_language=False)
    keys = set(load_file(save_pretrained(model, tmp_path / "ckpt") / "model.safetensors"))
    assert any(k.startswith("gemma.model.language_model.") for k in keys)
    assert not any(k.startswith("gemma.model.vision_tower.") for k in keys)
    assert not any(k.startswith("world_encoder.") for k in keys)


def test_from_pretrained_and_the_guide_recipe_restore_the_weights(tiny_models, tmp_path):
    torch.manual_seed(1)
    trained = TheWorld(*tiny_models, world_image_size=64)
    with torch.no_grad():
        trained.projector.net[0].weight.mul_(3)
    save_pretrained(trained, tmp_path / "final")

    loaded = TheWorld.from_pretrained(str(tmp_path / "final"))
    # The guide's recipe, verbatim apart from the ids and the local file.
    model = TheWorld(tiny_models[0], cosmos_model_name=tiny_models[1], world_image_size=64,
                     freeze_gemma_vision=True, freeze_gemma_language=True, freeze_cosmos_vae=True)
    state_dict = load_file(str(tmp_path / "final/model.safetensors"))
    model.load_state_dict(state_dict, strict=False)
    for other in (loaded, model):
        for key, value in trained.trainable_state_dict().items():
            assert torch.equal(other.state_dict()[key], value), key


def test_from_pretrained_names_mismatched_keys(tiny_models, tmp_path):
    model = TheWorld(*tiny_models, world_image_size=64, freeze_gemma_language=False)
    save_pretrained(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt/config.json").read_text())
    config["freeze_gemma_language"] = True  # the file now holds keys the rebuilt model keeps frozen
    (tmp_path / "ckpt/config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="frozen parameters.*gemma.model.language_model"):
        TheWorld.from_pretrained(str(tmp_path / "ckpt"))


def test_the_recipe_with_another_layout_names_the_options_not_a_size_mismatch_dump(tiny_models, tmp_path):
    trained = TheWorld(*tiny_models, world_image_size=64, projector_hidden_dim=48)
    save_pretrained(trained, tmp_path / "final")
    model = TheWorld(*tiny_models, world_image_size=64)  # the default projector_hidden_dim
    with pytest.raises(ValueError, match=r"projector\.net\.0\.weight \(48, \d+\) vs .*config\.json.*"
                                         r"projector_hidden_dim.*TheWorld\.from_pretrained"):
        model.load_state_dict(load_file(str(tmp_path / "final/model.safetensors")), strict=False)
    assert TheWorld.from_pretrained(str(tmp_path / "final")).config.projector_hidden_dim == 48


def test_init_from_loads_weights_only_for_a_new_stage(straight_run, tiny_models):
    from theworld.lit.module import TheWorldModule

    final = straight_run / "checkpoints/final"
    module = TheWorldModule(gemma_model_name=tiny_models[0], cosmos_model_name=tiny_models[1], world_image_size=64,
                            projector_hidden_dim=256, freeze_gemma_language=True, init_from=str(final))
    module.configure_model()
    saved = load_file(final / "model.safetensors")
    state = module.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    # The language weights came from stage 1 but stay frozen in this stage.
    assert not module.model.gemma.model.language_model.embed_tokens.weight.requires_grad


def test_predict_writes_captions_as_json_lines(straight_run, demo_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 200, 0)]):
        Image.new("RGB", (64, 64), colour).save(images / f"img{i}.png")
    out = tmp_path / "captions.jsonl"
    result = theworld("predict", "--config", REPO / "configs/demo.yaml", "--model.init_from",
                      straight_run / "checkpoints/final", "--data.predict_data", images, "--predictions.output_path",
                      out, "--model.max_new_tokens", "6", cwd=demo_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in rows) == ["img0.png", "img1.png", "img2.png"]
    assert all(isinstance(r["text"], str) and r["text"] for r in rows)
