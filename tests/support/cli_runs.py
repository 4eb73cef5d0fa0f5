"""`theworld fit` on configs/demo.yaml as a subprocess, and comparing the weights two runs end with."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
SHORT = ["--trainer.max_steps", "8", "--checkpoint.every_n_train_steps", "4", "--trainer.val_check_interval",
         "100", "--checkpoint.save_top_k", "-1"]


def fit(demo_dir, *args, env=None, **popen):
    """Runs in ``demo_dir`` with tests/support importable (test callbacks: ``--trainer.callbacks+=module.Class``).

    With ``popen`` keywords (``stdout=``...) returns the running Popen, otherwise the finished run's result."""
    cmd = [sys.executable, "-m", "theworld.lit.cli", "fit", "--config", str(REPO / "configs/demo.yaml"),
           *map(str, args)]
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "tests/support"), **(env or {})}
    if popen:
        return subprocess.Popen(cmd, cwd=demo_dir, env=full_env, **popen)
    return subprocess.run(cmd, cwd=demo_dir, env=full_env, capture_output=True, text=True, timeout=600)


def assert_same_weights(a: Path, b: Path):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6), key
