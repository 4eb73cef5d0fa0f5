"""configs/demo.yaml as a new user runs it: it learns to caption held-out images from their pixels, shows its
progress and says where everything went; and the world tokens alone carry what the image shows."""

import csv
import re
from pathlib import Path

import pytest
import torch
from support.cli_runs import REPO, theworld
from support.hub_cli import workdir

from theworld import TheWorld
from theworld.captions import CaptionSample, score_captions
from theworld.testing.synthetic import ATTRIBUTE_CHANCE, render_sample, sample_rng

HELD_OUT = re.compile(r"theworld: step (\d+): (\d+)% of \d+ held-out captions exactly right; shape colour (\d+)% "
                      r"\(chance \d+%\), shape (\d+)% \(chance \d+%\), background (\d+)%")


def run_demo(demo_dir, tmp_path, *overrides) -> tuple[str, Path]:
    """configs/demo.yaml in a folder of its own, as after `git clone`: (its output, its runs/demo folder)."""
    cwd = workdir(demo_dir, tmp_path / "fresh")
    result = theworld("fit", "--config", REPO / "configs/demo.yaml", *overrides, cwd=cwd)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout + result.stderr, cwd / "runs/demo"


def held_out(output: str) -> dict[str, int]:
    step, exact, colour, shape, background = map(int, HELD_OUT.findall(output)[-1])
    print(f"held-out at step {step}: exact {exact}%, shape colour {colour}%, shape {shape}%, background {background}%")
    return {"step": step, "exact": exact, "shape colour": colour, "shape": shape, "background": background}


def test_the_demo_shows_its_progress_and_starts_to_see(demo_dir, tmp_path):
    """The first 150 steps of the demo (the whole demo is the slow test below): where things go, a progress line
    every 50 steps, the figures logged, the colours learned from the pixels, and `theworld validate` reporting."""
    output, runs = run_demo(demo_dir, tmp_path, "--trainer.max_steps", "150", "--trainer.val_check_interval", "150",
                               "--model.val_captions", "32")
    assert f"checkpoints in {runs / 'checkpoints'}" in output and f"logs in {runs / 'logs/version_0'}" in output
    assert f"final weights in {runs / 'checkpoints/final'}" in output
    progress = re.findall(r"step (\d+)/150 \| train/loss [\d.]+ \| [\d.]+ samples/s \| ETA \d\d:\d\d:\d\d", output)
    assert [int(step) for step in progress] == [50, 100, 150], "a progress line every 50 steps"
    scores = held_out(output)
    assert scores["step"] == 150
    for name in ("shape colour", "background"):
        assert scores[name] / 100 >= 3 * ATTRIBUTE_CHANCE[name], name
    with open(runs / "logs/version_0/metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for metric in ("train/lr", "train/samples_per_sec", "train/tokens_per_sec", "val/caption_exact"):
        assert any(row.get(metric) for row in rows), metric

    validated = theworld("validate", "--config", REPO / "configs/demo.yaml", "--model.init_from",
                         runs / "checkpoints/final", cwd=runs.parents[1])
    assert validated.returncode == 0, validated.stderr[-4000:]
    assert re.search(r"val/caption_exact\s*[│|]\s*0\.\d+", validated.stdout), validated.stdout[-2000:]


@pytest.mark.slow
def test_the_whole_demo_learns_to_caption_the_held_out_images(demo_dir, tmp_path):
    """configs/demo.yaml as the README runs it (about two minutes): every attribute >= 3x chance, >= 25% exact."""
    output, _ = run_demo(demo_dir, tmp_path)
    scores = held_out(output)
    assert scores["step"] == 1000 and scores["exact"] >= 25
    for name in ("shape colour", "shape", "background"):
        assert scores[name] / 100 >= 3 * ATTRIBUTE_CHANCE[name], name


def test_the_world_tokens_alone_carry_the_colours(demo_dir):
    """Gemma's own image block left out of the sequence: all the model learns of the image comes through the VAE's
    world tokens and the projector (a plain PyTorch loop on the demo's models, 450 steps)."""
    assets = demo_dir / "demo_assets"
    torch.manual_seed(0)
    model = TheWorld(str(assets / "gemma-3-tiny"), str(assets / "cosmos-tiny"), world_image_size=64,
                     gemma_image_tokens=False, freeze_gemma_language=False, projector_hidden_dim=256)
    processor = model.processor
    assert "pixel_values" not in processor(render_sample(sample_rng(0, 0))[0])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for step in range(450):
        samples = [render_sample(sample_rng(0, step * 16 + i)) for i in range(16)]
        loss = model(**processor.collate([processor(image, caption=text) for image, text in samples]))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    held_out = [render_sample(sample_rng(1, i)) for i in range(64)]
    generated = model.generate([image for image, _ in held_out], max_new_tokens=16)
    scores = score_captions([CaptionSample(str(i), text, caption) for i, ((_, text), caption)
                             in enumerate(zip(held_out, generated))])
    print(scores)
    assert scores.attributes["shape colour"] >= 3 * ATTRIBUTE_CHANCE["shape colour"]
    assert scores.attributes["background"] >= 3 * ATTRIBUTE_CHANCE["background"]
