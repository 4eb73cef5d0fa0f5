"""`theworld fit` as a user runs it against the local Hub (HF_ENDPOINT), and scanning what it wrote for the token."""

import contextlib
import os
from pathlib import Path

import pytest
from huggingface_hub import constants
from support.accounts import SECRET  # noqa: F401
from support.cli_runs import fit, theworld


def workdir(demo_dir: Path, path: Path) -> Path:
    """A fresh run folder that sees the session's demo assets at the relative paths configs/demo.yaml uses."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "demo_assets").symlink_to(demo_dir / "demo_assets")
    return path


def hub_env(endpoint: str, hf_home: Path, **extra) -> dict:
    """What a run against the local Hub changes in the environment; no token unless ``extra`` sets HF_TOKEN."""
    return {"HF_TOKEN": None, "HUGGING_FACE_HUB_TOKEN": None, "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home),
            **extra}


def run(cwd: Path, endpoint: str, hf_home: Path, *args, env=None, program=None, fresh_interpreter=True,
        spy_weights=False):
    """`theworld fit --config configs/demo.yaml <args>` against the local Hub, by default in a fresh interpreter (a
    user's command whole, its start and its exit), or forked from a zygote (support/cli_runs.py); or
    ``<program> <args>``."""
    env = hub_env(endpoint, hf_home, **(env or {}))
    if program:
        return theworld(*args, cwd=cwd, env=env, program=program, timeout=300)
    return fit(cwd, *args, env=env, fresh_interpreter=fresh_interpreter, spy_weights=spy_weights, timeout=300)


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


@contextlib.contextmanager
def lfs_uploads():
    """Uploads by the LFS protocol, in this process and the runs it starts: the local Hub has no Xet storage, and
    huggingface_hub uploads through Xet whenever hf_xet is installed (production does; test_xet_upload.py walks
    that path with hf_xet's part stood in)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_DISABLE_XET", "1")
        patch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        yield
