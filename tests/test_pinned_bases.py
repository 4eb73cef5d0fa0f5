"""Checkpoints pin the exact base commits: loading after the base repo moved on still gets the weights trained on.

The base models live on the local Hub (private, so the token must reach every base load); each load runs in
its own process with HF_ENDPOINT pointing there, as a user's would.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hub_server import HubServer
from huggingface_hub import HfApi
from safetensors import safe_open
from support.hub_cli import lfs_uploads

from theworld.testing.tiny import write_tiny_gemma

ALICE = "hf_alice_base_owner_0123"
GEMMA, COSMOS = "alice/tiny-gemma", "alice/tiny-cosmos"


def python(code: str, endpoint: str, hf_home, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


WEIGHT_SUM = "float(m.gemma.model.language_model.layers[0].mlp.down_proj.weight.sum())"


@pytest.fixture
def hub_bases(tiny_models, tmp_path):
    with HubServer({ALICE: {"user": "alice", "role": "write"}}) as hub, lfs_uploads():
        api = HfApi(endpoint=hub.url, token=ALICE)
        for repo, folder in ((GEMMA, tiny_models[0]), (COSMOS, tiny_models[1])):
            api.create_repo(repo, private=True)
            api.upload_folder(repo_id=repo, folder_path=folder)
        yield hub, api


def test_a_checkpoint_loads_the_base_commits_it_was_trained_on(hub_bases, tmp_path):
    hub, api = hub_bases
    trained_on = api.repo_info(GEMMA).sha
    saved = python(f"""
        from theworld import TheWorld
        from theworld.checkpoint import save_pretrained
        m = TheWorld("{GEMMA}", "{COSMOS}", world_image_size=64, token="{ALICE}")
        save_pretrained(m, "ckpt")
        print({WEIGHT_SUM})
    """, hub.url, tmp_path / "hf", tmp_path)
    assert saved.returncode == 0, saved.stderr[-3000:]
    config = json.loads((tmp_path / "ckpt/config.json").read_text())
    assert config["gemma_revision"] == trained_on and config["cosmos_revision"] == api.repo_info(COSMOS).sha
    with safe_open(tmp_path / "ckpt/model.safetensors", "pt") as weights:
        metadata = weights.metadata()
    assert metadata["format"] == "pt" and metadata["gemma_revision"] == trained_on
    assert oct((tmp_path / "ckpt/model.safetensors").stat().st_mode & 0o777) == oct(
        (tmp_path / "ckpt/config.json").stat().st_mode & 0o777), "teammates can read the weights like the config"

    # The base repo moves on: new Gemma weights on main.
    api.upload_folder(repo_id=GEMMA, folder_path=write_tiny_gemma(tmp_path / "gemma-v2", seed=1))
    assert api.repo_info(GEMMA).sha != trained_on

    pinned = python(f"""
        from theworld import TheWorld
        m = TheWorld.from_pretrained("ckpt", token="{ALICE}")
        print({WEIGHT_SUM})
    """, hub.url, tmp_path / "hf-fresh", tmp_path)
    assert pinned.returncode == 0, pinned.stderr[-3000:]
    assert pinned.stdout.split()[-1] == saved.stdout.split()[-1]

    moved = python(f"""
        from theworld import TheWorld
        m = TheWorld.from_pretrained("ckpt", token="{ALICE}", gemma_revision="main")
        print({WEIGHT_SUM})
    """, hub.url, tmp_path / "hf-fresh", tmp_path)
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert moved.stdout.split()[-1] != saved.stdout.split()[-1]
    assert f"gemma_revision=main overrides the commit {trained_on}" in moved.stderr

    anonymous = python("""
        from theworld import TheWorld
        TheWorld.from_pretrained("ckpt")
    """, hub.url, tmp_path / "hf-anonymous", tmp_path)
    assert anonymous.returncode != 0
    assert "token" in anonymous.stderr.strip().splitlines()[-1]
