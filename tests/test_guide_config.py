"""The Hub upload guide's example configs (its "Example Workflows": Production, Private Experiment, Test Run) as the
guide writes them, run with `theworld fit --config X.json`: `--print_config` shows the YAML each became, and the
Private one, on top of the demo's models and data, trains and pushes to a private repo of the local Hub."""

import json

import pytest
import yaml
from support.cli_runs import theworld
from support.hub_cli import SECRET, hub_env, run, workdir

PRODUCTION = {
    "_comment": "Production config with Hub upload",
    "model_name": "google/gemma-3-4b-it",
    "cosmos_model_name": "nvidia/Cosmos-Predict2-2B-Video2World",
    "dataset_name": "datacomp",
    "streaming": True,
    "push_to_hub": True,
    "hub_model_id": "your-username/theworld-datacomp-projection",
    "hub_strategy": "every_save",
    "hub_private_repo": False,
    "log_to_wandb": True,
    "wandb_project": "theworld-datacomp",
    "wandb_run_name": "projection-only-1b",
}
PRIVATE = {"push_to_hub": True, "hub_model_id": "alice/theworld-experiment-v1", "hub_strategy": "every_save",
           "hub_private_repo": True}
TEST_RUN = {"push_to_hub": False, "hub_model_id": None}

# What each key must become in the printed config (dotted path -> value).
EXPECTED = {
    "production": (PRODUCTION, {
        "model.gemma_model_name": "google/gemma-3-4b-it",
        "model.cosmos_model_name": "nvidia/Cosmos-Predict2-2B-Video2World",
        "data.source": "hf", "data.dataset_name": "mlfoundations/datacomp_small", "data.train_data": None,
        "hub.push_to_hub": True, "hub.hub_model_id": "your-username/theworld-datacomp-projection",
        "hub.hub_strategy": "every_save", "hub.hub_private_repo": False,
        "trainer.logger.class_path": "lightning.pytorch.loggers.WandbLogger",
        "trainer.logger.init_args.project": "theworld-datacomp",
        "trainer.logger.init_args.name": "projection-only-1b"}),
    "private": (PRIVATE, {"hub.push_to_hub": True, "hub.hub_model_id": "alice/theworld-experiment-v1",
                          "hub.hub_strategy": "every_save", "hub.hub_private_repo": True}),
    "test-run": (TEST_RUN, {"hub.push_to_hub": False, "hub.hub_model_id": None}),
}


def lookup(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


@pytest.mark.parametrize("name", EXPECTED)
def test_a_guide_config_prints_as_the_yaml_it_became(name, module_hub, tmp_path):
    guide, expected = EXPECTED[name]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(guide, indent=2))
    result = theworld("fit", "--config", path, "--print_config", cwd=tmp_path,
                      env=hub_env(module_hub.url, tmp_path / "hf", HF_TOKEN=SECRET))
    assert result.returncode == 0, result.stderr[-3000:]
    printed = yaml.safe_load(result.stdout)
    for dotted, value in expected.items():
        assert lookup(printed, dotted) == value, dotted
    notes = result.stderr.splitlines()
    for key in guide:  # one line per key, naming its new spelling
        assert sum(line.startswith(f"  {key}: ") or line.startswith(f"  {key} -> ") for line in notes) == 1, key
    assert "  push_to_hub -> hub.push_to_hub" in notes
    assert SECRET not in result.stdout + result.stderr


def test_the_private_experiment_config_trains_and_pushes_to_a_private_repo(demo_dir, module_hub, tmp_path):
    cwd = workdir(demo_dir, tmp_path / "run")
    (tmp_path / "private.json").write_text(json.dumps(PRIVATE, indent=2))
    # The guide's hub settings added to a training config (here the demo's), the token from HF_TOKEN (Option A).
    result = run(cwd, module_hub.url, tmp_path / "hf", "--config", tmp_path / "private.json",
                 "--trainer.max_steps", "2", "--checkpoint.every_n_train_steps", "2", "--trainer.val_check_interval",
                 "100", "--data.batch_size", "4", env={"HF_TOKEN": SECRET})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "  hub_private_repo -> hub.hub_private_repo" in result.stderr
    assert module_hub.is_private("alice/theworld-experiment-v1")
    files = module_hub.files("alice/theworld-experiment-v1")
    assert files["final/model.safetensors"] == (cwd / "runs/demo/checkpoints/final/model.safetensors").read_bytes()
    assert SECRET not in result.stdout + result.stderr
    assert json.loads(files["training_args.json"])["hub"]["hub_private_repo"] is True
