"""`theworld fit` as a user runs it against the local Hub (HF_ENDPOINT), and scanning what it wrote for the token."""

import os
import subprocess
import sys
import time
from pathlib import Path

from support.cli_runs import REPO

SECRET = "hf_TheWorldTestSecret_5f0c2a9d7e41"  # distinctive: grepped for in every written file


def workdir(demo_dir: Path, path: Path) -> Path:
    """A fresh run folder that sees the session's demo assets at the relative paths configs/demo.yaml uses."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "demo_assets").symlink_to(demo_dir / "demo_assets")
    return path


def hub_env(endpoint: str, hf_home: Path, **extra) -> dict:
    """The environment of a run against the local Hub; no token unless ``extra`` sets HF_TOKEN."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_XET="1", HF_HOME=str(hf_home), WANDB_MODE="offline",
               HF_HUB_DISABLE_PROGRESS_BARS="1", **extra)
    return env


def run(cwd: Path, endpoint: str, hf_home: Path, *args, env=None, cmd=None):
    cmd = cmd or [sys.executable, "-m", "theworld.lit.cli", "fit", "--config", str(REPO / "configs/demo.yaml")]
    start = time.monotonic()
    result = subprocess.run([*cmd, *map(str, args)], cwd=cwd, env=hub_env(endpoint, hf_home, **(env or {})),
                            capture_output=True, text=True, timeout=300)
    result.seconds = time.monotonic() - start
    return result


def files_containing(root: Path, needle: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "demo_assets"]
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink() and needle.encode() in path.read_bytes():
                found.append(str(path.relative_to(root)))
    return found


def token_leaks(token: str, result, *roots: Path) -> list[str]:
    """Where ``token`` shows up: the run's output, and files under ``roots``."""
    output = ["stdout/stderr"] if token in result.stdout + result.stderr else []
    return output + [f"{root}/{name}" for root in roots for name in files_containing(root, token)]


def assert_secret_nowhere(result, root: Path, hub, repo_id: str):
    assert SECRET not in result.stdout + result.stderr
    assert files_containing(root, SECRET) == []
    assert all(SECRET.encode() not in data for data in hub.files(repo_id).values())
    assert list(root.rglob("config.yaml")), "the saved config was checked"
