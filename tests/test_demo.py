"""configs/demo.yaml as a new user runs it: it learns to caption held-out images from their pixels, shows its
progress and says where everything went; and the world tokens alone carry what the image shows."""

import csv
import re
import subprocess
import sys

import torch

from support.cli_runs import REPO
from support.hub_cli import workdir
from theworld import TheWorld
from theworld.captions import CaptionSample, score_captions
from theworld.data.synthetic import ATTRIBUTE_CHANCE, render_sample, sample_rng

HELD_OUT = re.compile(r"theworld: step (\d+): (\d+)% of 64 held-out captions exactly right; shape colour (\d+)% "
                      r"\(chance \d+%\), shape (\d+)% \(chance \d+%\), background (\d+)%")


def theworld(*args, cwd):
    return subprocess.run([sys.executable, "-m", "theworld.lit.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def test_the_demo_learns_to_see_and_says_so(demo_dir, tmp_path):
    cwd = workdir(demo_dir, tmp_path / "fresh")  # a folder of its own, as after `git clone`
    result = theworld("fit", "--config", REPO / "configs/demo.yaml", cwd=cwd)
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    runs = cwd / "runs/demo"
    assert f"checkpoints in {runs / 'checkpoints'}" in output and f"logs in {runs / 'logs/version_0'}" in output
    assert f"final weights in {runs / 'checkpoints/final'}" in output
    progress = re.findall(r"step (\d+)/1000 \| train/loss [\d.]+ \| [\d.]+ samples/s \| ETA \d\d:\d\d:\d\d", output)
    assert [int(step) for step in progress] == list(range(50, 1001, 50)), "a progress line every 50 steps"

    step, exact, colour, shape, background = map(int, HELD_OUT.findall(output)[-1])
    print(f"held-out at step {step}: exact {exact}%, shape colour {colour}%, shape {shape}%, background {background}%")
    assert step == 1000 and exact >= 25
    for name, value in (("shape colour", colour), ("shape", shape), ("background", background)):
        assert value / 100 >= 3 * ATTRIBUTE_CHANCE[name], name

    with open(runs / "logs/version_0/metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for metric in ("train/lr", "train/samples_per_sec", "train/tokens_per_sec", "val/caption_exact"):
        assert any(row.get(metric) for row in rows), metric

    # `theworld validate` reports the same check for the trained weights.
    validated = theworld("validate", "--config", REPO / "configs/demo.yaml", "--model.init_from",
                         runs / "checkpoints/final", cwd=cwd)
    assert validated.returncode == 0, validated.stderr[-4000:]
    assert re.search(r"val/caption_exact\s*[│|]\s*0\.\d+", validated.stdout), validated.stdout[-2000:]


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
