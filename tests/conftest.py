import os

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "0")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One compute thread per test process (the CLI runs included): two xdist workers share two cores, and tiny models
# gain nothing from more threads (test_resume + test_data_fit: 186 s with torch's default, 140 s with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import fcntl  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hub_server import HubServer  # noqa: E402
from huggingface_hub import constants  # noqa: E402
from support.accounts import TOKENS  # noqa: E402
from support.cli_runs import SHORT, fit  # noqa: E402
from support.hub_cli import lfs_uploads  # noqa: E402

from theworld.testing.http import serve_directory  # noqa: E402
from theworld.testing.tiny import write_tiny_cosmos, write_tiny_gemma  # noqa: E402

# The test files with the longest end-to-end runs, longest first (seconds on 2 cores, 2026-12-07; test_resume,
# test_data_fit and test_demo scaled by the CPU their runs forked from a zygote saved, test_hub_cli and test_resume
# by what 2026-12-08's forked Hub runs and merged resume runs saved, bench/RESULTS.md). The suite runs whole files on
# two workers (--dist loadfile, --no-loadscope-reorder in pyproject.toml) in collection order: the long ones start
# first, so no worker is left alone with a long file at the end while the other idles (xdist's own order, by number
# of tests, ran the 3-minute spatial demo last).
LONGEST_FIRST = [
    "test_ddp.py",  # 246 (fresh interpreters: torchrun and Lightning's launcher)
    "test_demo_spatial.py",  # 175
    "test_resume.py",  # 147
    "test_hub_cli.py",  # 145 (the pushed and the Hub-down runs in fresh interpreters)
    "test_checkpoint.py",  # 114
    "reliability/test_signals.py",  # 112 (fresh interpreters)
    "test_demo.py",  # 108
    "reliability/test_kills.py",  # 95 (fresh interpreters)
    "reliability/test_bad_input.py",  # 82
    "test_data_fit.py",  # 77
    "test_bench.py",  # 67
    "test_latent_cache.py",  # 62
    "test_evaluate.py",  # 60
    "test_guide_config.py",  # 49
    "test_hub_dataset.py",  # 49
]


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith(f"tests/{name}")), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: within a file, and among the short files, the order stays


@pytest.fixture(autouse=True)
def _isolated_hub_env(monkeypatch, tmp_path):
    """No test sees the machine's Hub login, token or cache; huggingface_hub may have been imported before
    the environment above was set."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login-token"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@pytest.fixture
def hub():
    """A fresh local Hub (tests/hub_server.py) for one test, knowing the accounts of support/accounts.py."""
    with HubServer(TOKENS) as server, lfs_uploads():
        yield server


@pytest.fixture(scope="module")
def module_hub():
    """One local Hub shared by a module's tests, for module-scoped runs that push to it."""
    with HubServer(TOKENS) as server, lfs_uploads():
        yield server


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """(gemma_dir, cosmos_dir): tiny checkpoints in the real Hugging Face formats, built once."""
    root = tmp_path_factory.mktemp("tiny_models")
    return write_tiny_gemma(root / "gemma-3-tiny"), write_tiny_cosmos(root / "cosmos-tiny")


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder ``name`` that ``build(folder)`` filled, built once per test run: the first xdist worker to ask
    builds it, the other waits for it (both would otherwise pay for the same tiny models, shards and runs). What
    comes back is shared: read it, copy it, never write into it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-N/, beside each worker's popen-gwN/: this run's, no other run's
    folder = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (base / f"{name}.built").exists():
            shutil.rmtree(folder, ignore_errors=True)  # left by a worker that failed to build it
            folder.mkdir()
            build(folder)
            (base / f"{name}.built").touch()
    return folder


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A working directory of this worker's own, holding demo_assets/ (tiny models + synthetic shards, shared by the
    workers: read-only) for configs/demo.yaml."""
    from theworld.testing.demo_assets import write_demo_assets

    assets = built_once(tmp_path_factory, "demo_assets", lambda folder: write_demo_assets(folder / "demo_assets"))
    root = tmp_path_factory.mktemp("demo")
    (root / "demo_assets").symlink_to(assets / "demo_assets")
    return root


@pytest.fixture(scope="session")
def straight_run(demo_dir, tmp_path_factory):
    """The uninterrupted reference run: 8 steps of configs/demo.yaml in one go, checkpoints every 4 (shared by the
    workers: read-only)."""

    def run(root):
        result = fit(demo_dir, *SHORT, "--trainer.default_root_dir", root, "--trainer.logger.init_args.save_dir", root)
        assert result.returncode == 0, result.stderr[-3000:]

    return built_once(tmp_path_factory, "straight", run)


@pytest.fixture
def fast_client_backoff(monkeypatch):
    """huggingface_hub sleeps 1, 2, 4... s between its own retries; shrink that so fault tests stay fast."""

    class FastTime:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds):
            time.sleep(min(seconds, 0.01))

    monkeypatch.setattr(sys.modules["huggingface_hub.utils._http"], "time", FastTime())


@pytest.fixture
def serve():
    """``serve(path, **behaviours) -> base URL``; servers stop at the end of the test."""
    stops = []

    def start(path, **behaviours) -> str:
        url, stop = serve_directory(path, **behaviours)
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        stop()
