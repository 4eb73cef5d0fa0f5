"""The reference project's own configs (kasohrab/theworld `configs/`, copied to tests/fixtures/reference_configs/)
run with `theworld fit`, changed only in where the models and the data are; and every key of the guide's table in
docs/guide-configs.md lands where its table says, each with a value no other key has, read back with `--print_config`."""

import json
import re
from pathlib import Path

import pytest
import yaml
from hub_server import HubServer
from support.cli_runs import REPO, theworld
from support.hub_cli import hub_env, lfs_uploads, workdir

from theworld.testing.synthetic import write_webdataset_shards

REFERENCE = Path(__file__).parent / "fixtures/reference_configs"
OWNER_TOKEN = "hf_kasohrab_writes_its_own_repo"
# Where the models and the data are: the demo's tiny models, and one batch of its synthetic images in a local shard
# instead of the Hub dataset (the reference configs train one epoch; one batch makes it one step).
LOCAL = ["--model.gemma_model_name", "demo_assets/gemma-3-tiny", "--model.cosmos_model_name", "demo_assets/cosmos-tiny",
         "--data.source", "webdataset", "--data.train_data", "data/train-00000.tar", "--data.dataset_name", "null"]


# Each trains one step of the default 448-pixel world image in bf16 on the CPU (over a minute): the VSR config runs
# with -m slow, to keep CI short.
@pytest.mark.parametrize("name", ["datacomp_production", pytest.param("vsr_training", marks=pytest.mark.slow)])
def test_a_reference_config_trains_as_it_is(name, demo_dir, tmp_path):
    config = json.loads((REFERENCE / f"{name}.json").read_text())
    cwd = workdir(demo_dir, tmp_path / "run")
    write_webdataset_shards(cwd / "data", 1, config["batch_size"], seed=0, prefix="train")
    with HubServer({OWNER_TOKEN: {"user": "kasohrab", "role": "write"}}) as hub, lfs_uploads():
        result = theworld("fit", "--config", REFERENCE / f"{name}.json", *LOCAL, cwd=cwd, timeout=600,
                          env=hub_env(hub.url, tmp_path / "hf", HF_TOKEN=OWNER_TOKEN, WANDB_MODE="offline"))
        pushed = hub.files(config["hub_model_id"]) if config["push_to_hub"] else {}
    assert result.returncode == 0, result.stderr[-3000:]
    assert "theworld: error" not in result.stderr
    output = cwd / config["output_dir"]
    final = output / "checkpoints/final/model.safetensors"
    assert final.is_file()
    assert list(output.rglob("events.out.tfevents.*")), "log_to_tensorboard: a TensorBoard log beside W&B"
    assert bool(list(output.rglob("wandb/offline-run-*"))) == config["log_to_wandb"]
    if config["push_to_hub"]:
        assert pushed["final/model.safetensors"] == final.read_bytes()


# The documented table (docs/guide-configs.md), key by key: a value of the key's type that no other key has, and where it must land.
DISTINCT = {
    "model_name": ("g/distinct-gemma", "model.gemma_model_name"),
    "cosmos_model_name": ("c/distinct-cosmos", "model.cosmos_model_name"),
    "freeze_gemma_vision": (False, "model.freeze_gemma_vision"),
    "freeze_gemma_language": (False, "model.freeze_gemma_language"),
    "freeze_cosmos_vae": (False, "model.freeze_cosmos_vae"),
    "enable_world": (False, "model.enable_world"),
    "use_gradient_checkpointing": (True, "model.gradient_checkpointing"),
    "learning_rate": (0.00011, "model.learning_rate"),
    "weight_decay": (0.013, "model.weight_decay"),
    "warmup_steps": (17, "model.warmup_steps"),
    "batch_size": (3, "data.batch_size"),
    "eval_batch_size": (5, "data.val_batch_size"),
    "num_workers": (7, "data.num_workers"),
    "num_samples": (19, "data.num_samples"),
    "question_template": ("A distinct question?", "data.prompt"),
    "max_steps": (23, "trainer.max_steps"),
    "num_epochs": (29, "trainer.max_epochs"),
    "gradient_accumulation_steps": (31, "trainer.accumulate_grad_batches"),
    "max_grad_norm": (0.37, "trainer.gradient_clip_val"),
    "output_dir": ("distinct-output", "trainer.default_root_dir"),
    "logging_steps": (41, "trainer.log_every_n_steps"),
    "eval_steps": (43, "trainer.val_check_interval"),
    "save_steps": (47, "checkpoint.every_n_train_steps"),
    "save_total_limit": (53, "checkpoint.save_top_k"),
    "seed": (59, "seed_everything"),
    "push_to_hub": (True, "hub.push_to_hub"),
    "hub_model_id": ("alice/distinct-repo", "hub.hub_model_id"),
    "hub_strategy": ("all_checkpoints", "hub.hub_strategy"),
    "hub_private_repo": (True, "hub.hub_private_repo"),
    "resume_from_checkpoint": ("distinct-checkpoint", "ckpt_path"),
    "mixed_precision": ("fp16", ("trainer.precision", "16-mixed")),
    "device": ("cuda", ("trainer.accelerator", "gpu")),
    "dataset_name": ("user/distinct-dataset", ("data.dataset_name", "user/distinct-dataset")),
    "do_eval": (False, ("trainer.limit_val_batches", 0)),
    "log_to_wandb": (True, ("trainer.logger.0.class_path", "lightning.pytorch.loggers.WandbLogger")),
    "wandb_project": ("distinct-project", "trainer.logger.0.init_args.project"),
    "wandb_run_name": ("distinct-run", "trainer.logger.0.init_args.name"),
    "log_to_tensorboard": (True, ("trainer.logger.1.class_path", "lightning.pytorch.loggers.TensorBoardLogger")),
}


def lookup(config, dotted: str):
    for key in dotted.split("."):
        config = config[int(key)] if isinstance(config, list) else config[key]
    return config


def test_every_key_lands_where_the_documented_table_says(tmp_path):
    values = [value for value, _ in DISTINCT.values() if not isinstance(value, bool)]
    assert len(values) == len(set(map(str, values))), "each key's value is its own"
    table = (REPO / "docs/guide-configs.md").read_text().partition("| guide key | TheWorld |")[2].partition("\n\n")[0]
    for key in DISTINCT:
        assert re.search(rf"^\|[^|]*`{key}[`:]", table, re.MULTILINE), f"{key} is not in the guide-config table (docs/guide-configs.md)"
    path = tmp_path / "distinct.json"
    path.write_text(json.dumps({key: value for key, (value, _) in DISTINCT.items()}))
    result = theworld("fit", "--config", path, "--print_config", cwd=tmp_path, env=hub_env("http://127.0.0.1:9",
                                                                                             tmp_path / "hf"))
    assert result.returncode == 0, result.stderr[-3000:]
    printed = yaml.safe_load(result.stdout)
    for key, (value, place) in DISTINCT.items():
        dotted, expected = place if isinstance(place, tuple) else (place, value)
        assert lookup(printed, dotted) == expected, f"{key} -> {dotted}"
