"""Bad input to `theworld`: each mistake ends the run before any weight loads (a spy on every weight loader
records nothing), with one `theworld: error:` paragraph that names the field and the fix, exit code 2 for what
the config parser refuses and 1 for the rest, and no traceback; no token shows up in the output or in any file
the run wrote. How long each takes is bench/cli_startup.py's figure, not an assertion here."""

import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hub_server import HubServer
from support.cli_runs import REPO
from support.hub_cli import SECRET, run, token_leaks, workdir

from theworld.hub import ModelSourceError, pin_base

pytestmark = pytest.mark.reliability

BAD_TOKEN = "hf_BadTokenTheHubRejects_73a1c9"
GATED = "google/gemma-3-4b-it"
PUSH = ["--hub.push_to_hub", "true", "--hub.hub_model_id", "alice/x"]


SPY = Path(__file__).resolve().parents[1] / "support/weight_spy.py"


@dataclass
class Case:
    args: list
    expect: list[str]  # all in the error paragraph
    exit_code: int = 1
    env: dict = field(default_factory=dict)
    command: str = "fit"


# {user} is a folder outside the run's own, like a user's config directory.
CASES = {
    "malformed-yaml": Case(["--config", "{user}/broken.yaml"], ["broken.yaml is not valid YAML", "line 2"], 2),
    "unknown-key-in-yaml": Case(["--config", "{user}/typo.yaml"],
                                ["'trainer.max_stepz'", "Did you mean --trainer.max_steps?"], 2),
    "unknown-key-on-command-line": Case(["--model.lerning_rate", "0.1"],
                                        ["--model.lerning_rate", "Did you mean --model.learning_rate?"], 2),
    # A prefix of a real option is a typo too, not an abbreviation that silently sets it.
    "truncated-key-on-command-line": Case(["--model.learning_rat", "0.1"],
                                          ["--model.learning_rat", "Did you mean --model.learning_rate?"], 2),
    "wrong-type": Case(["--trainer.max_steps", "lots"], ['"trainer.max_steps"', "int", "lots"], 2),
    "hub-strategy-typo": Case(["--hub.hub_strategy", "every-save"],
                              ['"hub.hub_strategy"', "every_save", "all_checkpoints", "Got value: every-save"], 2),
    "negative-max-steps": Case(["--trainer.max_steps", "-5"], ["trainer.max_steps=-5", "-1 for no limit"], 2),
    "batch-size-zero": Case(["--data.batch_size", "0"], ["data.batch_size=0", "at least 1"], 2),
    "dataset-not-readable": Case(["--data.source", "hf", "--data.dataset_name", "alice/no-such-dataset",
                                  "--data.train_data", "null", "--data.val_data", "null"], [
        "data.dataset_name='alice/no-such-dataset'", "Repository not found", "/datasets/alice/no-such-dataset",
        "your token (from the HF_TOKEN environment variable)"], env={"HF_TOKEN": SECRET}),
    "shards-for-the-hf-source": Case(["--data.source", "hf"], [
        "data.train_data='demo_assets/data/train-*.tar'", "matches .tar shards", "data.source: webdataset"]),
    "resampled-rows": Case(["--data.source", "hf", "--data.resampled", "true"],
                           ["data.resampled draws webdataset shards", "Set data.source: webdataset"], 2),
    "missing-model-folder": Case(["--model.gemma_model_name", "./nope"],
                                 ["model.gemma_model_name='./nope'", "there is no folder", "Fix the path"]),
    # Looks like a Hub id, but demo_assets/ is a folder here: a path with a typo, not something to download.
    "mistyped-model-folder": Case(["--model.gemma_model_name", "demo_assets/gemma-nope"],
                                  ["model.gemma_model_name='demo_assets/gemma-nope'", "there is no folder",
                                   "gemma-3-tiny"]),
    "missing-init-from": Case(["--model.init_from", "runs/old/checkpoints/final"],
                              ["--model.init_from runs/old/checkpoints/final", "no such folder"]),
    "missing-ckpt-path": Case(["--ckpt_path", "runs/old/checkpoints/checkpoint-40"],
                              ["--ckpt_path runs/old/checkpoints/checkpoint-40", "no such checkpoint folder",
                               "hf://user/repo"]),
    "shards-match-nothing": Case(["--data.train_data", "demo_assets/data/trian-*.tar"],
                                 ["data.train_data='demo_assets/data/trian-*.tar'", "No shards match"]),
    "predict-without-images": Case([], ["theworld predict needs the images", "--data.predict_data"],
                                   command="predict"),
    "unknown-hub-model": Case(["--model.cosmos_model_name", "nvidia/Cosmos-Nope"], [
        "model.cosmos_model_name='nvidia/Cosmos-Nope'", "no model", "Fix the path or the Hub id"]),
    "gated-gemma": Case(["--model.gemma_model_name", GATED], [
        f"model.gemma_model_name='{GATED}' is gated", "accept the licence on the model page",
        "a token of that same account", "the token from the HF_TOKEN environment variable"], env={"HF_TOKEN": SECRET}),
    "bad-token-command-line": Case([*PUSH, "--hf_token", BAD_TOKEN],
                                   ["Authentication failed", "token from --hf_token is invalid or expired"]),
    "bad-token-yaml": Case(["--config", "{user}/token.yaml"],
                           ["Authentication failed", "token from hub.hf_token is invalid or expired"]),
    "bad-token-environment": Case(PUSH, ["the HF_TOKEN environment variable is invalid or expired"],
                                  env={"HF_TOKEN": BAD_TOKEN}),
}


@pytest.fixture(scope="module")
def outcomes(demo_dir, tmp_path_factory):
    """Every case as its own `theworld fit` process, two at a time (one per core of the CI machine)."""
    user = tmp_path_factory.mktemp("user_configs")
    (user / "broken.yaml").write_text("model:\n  gemma_model_name: [demo_assets/gemma-3-tiny\n")
    (user / "typo.yaml").write_text("trainer:\n  max_stepz: 3\n")
    (user / "token.yaml").write_text(yaml.safe_dump({"hub": {"push_to_hub": True, "hub_model_id": "alice/x",
                                                             "hf_token": BAD_TOKEN}}))
    hf_home = tmp_path_factory.mktemp("hf_home")
    with HubServer({SECRET: {"user": "alice", "role": "write"}}) as hub:
        hub.create_repo(GATED)
        hub.make_gated(GATED)

        def attempt(name):
            cwd = workdir(demo_dir, tmp_path_factory.mktemp(name))
            args = [arg.format(user=user) for arg in CASES[name].args]
            env = {**CASES[name].env, "THEWORLD_WEIGHT_LOG": str(cwd / "weight-loads.log")}
            return name, (run(cwd, hub.url, hf_home, CASES[name].command, "--config", REPO / "configs/demo.yaml",
                              *args, env=env, program=[sys.executable, SPY]), cwd)

        with ThreadPoolExecutor(2) as pool:
            yield dict(pool.map(attempt, CASES))


@pytest.mark.parametrize("name", CASES)
def test_bad_input_fails_fast_with_one_clear_paragraph(outcomes, name, figures):
    result, cwd = outcomes[name]
    errors = [line for line in result.stderr.splitlines() if line.startswith("theworld: error: ")]
    figures.record("bad_input", case=name, exit_code=result.returncode, seconds=round(result.seconds, 1),
                   error=errors[0] if errors else None)
    assert result.returncode == CASES[name].exit_code, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    for text in CASES[name].expect:
        assert text in errors[0]
    assert "Traceback" not in result.stderr
    assert not (cwd / "weight-loads.log").exists(), (cwd / "weight-loads.log").read_text()
    assert not (cwd / "runs/demo/checkpoints").exists()
    leaks = token_leaks(SECRET, result, cwd) + token_leaks(BAD_TOKEN, result, cwd)
    figures.record("token_scan", case=name, files=sum(p.is_file() for p in cwd.rglob("*")), hub_files=0,
                   leaks=len(leaks))
    assert leaks == []


def test_the_weight_spy_sees_the_loads_of_a_run_that_goes_ahead(demo_dir, tmp_path):
    """What the check above relies on: a command that does load the model is recorded."""
    cwd = workdir(demo_dir, tmp_path / "run")
    log = cwd / "weight-loads.log"
    result = run(cwd, "http://127.0.0.1:9", tmp_path / "hf", "validate", "--config", REPO / "configs/demo.yaml",
                 "--trainer.limit_val_batches", "1", "--model.val_captions", "0",
                 env={"THEWORLD_WEIGHT_LOG": str(log)}, program=[sys.executable, SPY])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TheWorld._load_base" in log.read_text() and "safe_open" in log.read_text()


def test_a_model_id_comes_from_the_local_cache_when_the_hub_cannot_be_asked(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelSourceError, match="not in the local Hugging Face cache and cannot be downloaded"):
        pin_base(GATED, "model.gemma_model_name", endpoint=dead)
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--google--gemma-3-4b-it" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--google--gemma-3-4b-it" / "refs").mkdir()
    (tmp_path / "models--google--gemma-3-4b-it" / "refs" / "main").write_text(commit)
    assert pin_base(GATED, "model.gemma_model_name", endpoint=dead) == (GATED, commit)
