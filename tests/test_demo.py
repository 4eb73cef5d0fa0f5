"""configs/demo.yaml as a new user runs it: it learns to caption held-out images from their pixels, shows its
progress and says where everything went. (The world tokens alone: tests/test_demo_spatial.py.)"""

import csv
import re
from pathlib import Path

import pytest
from support.cli_runs import REPO, theworld
from support.hub_cli import workdir

from theworld.demo_grammar import ATTRIBUTE_CHANCE

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
    after the first step and every 50 steps, the figures logged, the colours learned from the pixels, and `theworld
    validate` reporting."""
    output, runs = run_demo(demo_dir, tmp_path, "--trainer.max_steps", "150", "--trainer.val_check_interval", "150",
                               "--model.val_captions", "32")
    assert f"checkpoints in {runs / 'checkpoints'}" in output and f"logs in {runs / 'logs/version_0'}" in output
    assert f"final weights in {runs / 'checkpoints/final'}" in output
    progress = re.findall(r"step (\d+)/150 \| train/loss [\d.]+ \| [\d.]+ samples/s \| "
                          r"(?:first step [\d.]+ s|ETA \d\d:\d\d:\d\d)", output)
    assert [int(step) for step in progress] == [1, 50, 100, 150], "a progress line at once, then every 50 steps"
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
