import os

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "0")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from theworld.data.testing_http import serve_directory  # noqa: E402
from theworld.testing.tiny import write_tiny_cosmos, write_tiny_gemma  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """(gemma_dir, cosmos_dir): tiny checkpoints in the real Hugging Face formats, built once."""
    root = tmp_path_factory.mktemp("tiny_models")
    return write_tiny_gemma(root / "gemma-3-tiny"), write_tiny_cosmos(root / "cosmos-tiny")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A working directory holding demo_assets/ (tiny models + synthetic shards) for configs/demo.yaml."""
    from theworld.testing.demo_assets import write_demo_assets

    root = tmp_path_factory.mktemp("demo")
    write_demo_assets(root / "demo_assets")
    return root


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
