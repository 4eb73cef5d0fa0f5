"""`theworld fit` with the Hub, as a user runs it: subprocesses against the local Hub (HF_ENDPOINT).

The pushed run (W&B, TensorBoard, pushes while it trains) and the run whose Hub is down start as a user's command
does, in a fresh interpreter, and end as one does, with the uploader's thread still there; the resumes, warm starts
and preflight stops, which test what the run does and not how the process starts or ends, fork from a zygote that
has imported theworld (support/cli_runs.py)."""

import json
import platform
import re
import socket
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from safetensors.torch import load_file
from support.cli_runs import REPO, provenance
from support.hub_cli import SECRET, assert_secret_nowhere, run, workdir

SHORT = ["--trainer.max_steps", "6", "--checkpoint.every_n_train_steps", "4", "--trainer.val_check_interval", "100",
         "--data.batch_size", "8"]
WEIGHTS = ("model.safetensors", "config.json", "provenance.json")
ROOT = {*WEIGHTS, "README.md", "training_args.json", "data_yield.json"}
FINAL = {f"final/{n}" for n in WEIGHTS}
LAST = {f"last-checkpoint/{n}" for n in (*WEIGHTS, "training_state.pt")}
REPORT = ("loss_curve.png", "samples/", "runs/")  # what the card shows, replaced at each push


@pytest.fixture(scope="module")
def hub(module_hub):
    """Shared by this module's tests: `pushed` runs once and the tests read its repo."""
    return module_hub


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture(scope="module")
def pushed(demo_dir, hub, hf_home, tmp_path_factory):
    """6 steps, a checkpoint at step 4, validations at steps 3 and 6, pushed with hub_strategy=checkpoint and
    TensorBoard logs to a private repo; token via --hf_token; W&B (offline) as the logger."""
    cwd = workdir(demo_dir, tmp_path_factory.mktemp("pushed"))
    # The validation at step 6 forks its loader workers while the step-4 push is uploading.
    result = run(cwd, hub.url, hf_home, *SHORT, "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1",
                 "--model.val_captions", "8",
                 "--hf_token", SECRET, "--hub.push_to_hub", "true",
                 "--hub.hub_model_id", "alice/run", "--hub.hub_strategy", "checkpoint", "--hub.hub_private_repo",
                 "true", "--hub.hub_tag", "v1.0-final", "--hub.push_logs", "true",
                 "--trainer.logger", "lightning.pytorch.loggers.WandbLogger",
                 "--trainer.logger.init_args.project", "theworld-test", "--trainer.logger.init_args.offline", "true",
                 "--trainer.logger.init_args.save_dir", cwd / "wandb_out")
    assert result.returncode == 0, result.stderr[-4000:]
    return cwd, result


def documented_hub_layout() -> list[str]:
    """The paths the "path on the Hub" table of docs/hub.md lists (`checkpoint-{step}/` as written there)."""
    lines = (REPO / "docs/hub.md").read_text().split("| path on the Hub |", 1)[1].split("\n\n", 1)[0].splitlines()
    return [path for line in lines[2:] for path in re.findall(r"`([^`]+)`", line.split("|")[1])]


def test_the_documented_hub_table_lists_every_pushed_file(pushed, hub):
    listed = [re.escape(path).replace(r"\{step\}", r"\d+") + ("" if path.endswith("/") else "$")
              for path in documented_hub_layout()]
    pushed_files = set(hub.files("alice/run")) - {".gitattributes"}
    unlisted = sorted(f for f in pushed_files if not any(re.match(pattern, f) for pattern in listed))
    assert not unlisted, f"pushed but missing from the Hub layout table of docs/hub.md: {unlisted}"


def test_push_lands_the_checkpoint_layout_in_a_private_repo(pushed, hub):
    cwd, _ = pushed
    files = hub.files("alice/run")
    deltas = {f"provenance/{p.name}" for p in (cwd / "runs/demo/checkpoints/provenance").iterdir()}
    assert len(deltas) == 2 and {f for f in files if not f.startswith(REPORT)} == ROOT | FINAL | LAST | deltas
    assert hub.is_private("alice/run")
    local = cwd / "runs/demo/checkpoints"
    assert files["final/model.safetensors"] == (local / "final/model.safetensors").read_bytes()
    assert not list(local.glob(".hub-staging-*")), "a clean exit leaves no staging folder"
    # The last step, saved at the end although the schedule (every 4) did not ask for it: resumable, and finished.
    assert files["last-checkpoint/training_state.pt"] == (local / "checkpoint-6/training_state.pt").read_bytes()
    messages = [c["message"] for c in hub.commits("alice/run")]
    assert messages[-1] == "End of training" and "Training in progress, step 4" in messages
    refs = HfApi(endpoint=hub.url, token=SECRET).list_repo_refs("alice/run")
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0-final", hub.commits("alice/run")[-1]["oid"])]
    args = yaml.safe_load(files["training_args.json"])
    assert args["hub"]["hub_strategy"] == "checkpoint" and args["hf_token"] is None and args["hub"]["hf_token"] is None
    assert args["model"]["world_image_size"] == 64 and args["trainer"]["max_steps"] == 6
    assert args["data"]["max_caption_tokens"] == 32  # a "token" in a name is not a secret


def test_the_card_shows_the_results_the_loss_curve_and_held_out_samples(pushed, hub):
    cwd, _ = pushed
    files = hub.files("alice/run")
    text = files["README.md"].decode()
    card = ModelCard(text)  # the Hub's own parser: the YAML and its model-index load
    metrics = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert set(metrics) >= {"val/loss", "val/caption_exact", "val/caption_shape_colour"}
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \|", text, re.M)
    assert [(int(step), int(samples)) for step, samples, *_ in rows] == [(3, 24), (6, 48)]
    assert float(rows[-1][3]) == pytest.approx(metrics["val/loss"], abs=1e-4)
    assert files["loss_curve.png"].startswith(b"\x89PNG") and "![Loss curve](loss_curve.png)" in text
    samples = json.loads(files["samples/captions.json"])
    assert 4 <= len(samples) <= 8 and sorted(f for f in files if f.endswith(".png") and "samples/" in f) == sorted(
        s["image"] for s in samples)
    for sample in samples:
        assert files[sample["image"]].startswith(b"\x89PNG") and f"]({sample['image']})" in text
        assert sample["reference"] in text
    assert any(f.startswith("runs/") and "tfevents" in f for f in files)
    config = json.loads(files["config.json"])
    # The versions that trained it: every dependency of theworld, as installed in the training process.
    assert "### Framework versions" in text and f"- torch {torch.__version__}" in text
    assert f"- python {platform.python_version()}" in text and f"- lightning {version('lightning')}" in text
    assert f"- pyarrow {version('pyarrow')}" in text and f"- jsonargparse {version('jsonargparse')}" in text
    assert f"`{config['gemma_model_name']}`" in text and "| effective batch | 8 |" in text
    # Every trained sample's key, pushed beside the weights and named by the card.
    assert json.loads(files["provenance.json"])["rows"] == 48
    assert ("| provenance | each trained sample's key: `provenance/`, the files `provenance.json` names (48 rows)"
            in text)
    # The same gallery went to W&B as a table.
    assert list((cwd / "wandb_out").rglob("media/table/val/gallery_*.table.json"))


def test_cli_token_is_in_no_written_file_wandb_log_or_upload(pushed, hub):
    cwd, result = pushed
    records = list((cwd / "wandb_out").rglob("offline-run-*/run-*.wandb"))
    assert records and b"--hub.hub_model_id" in records[0].read_bytes(), "W&B recorded the command line"
    assert_secret_nowhere(result, cwd, hub, "alice/run")


def test_guide_recipe_and_from_pretrained_load_the_pushed_weights(pushed, hub, hf_home, tmp_path):
    """Runs the model card's usage example as written (private repo: HF_TOKEN), then from_pretrained(token=...)."""
    cwd, _ = pushed
    card = hub.files("alice/run")["README.md"].decode()
    (tmp_path / "snippet.py").write_text(card.split("```python\n")[1].split("```")[0])
    check = f"""
import os, torch
from safetensors.torch import load_file
from theworld import TheWorld

final = load_file({str(cwd / "runs/demo/checkpoints/final/model.safetensors")!r})
def check(model):
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in final.items())

code = open({str(tmp_path / "snippet.py")!r}).read()
recipe = {{}}
exec(code.split("# Or in one call")[0], recipe)   # the guide's three steps
check(recipe["model"])
full = {{}}
exec(code, full)                                  # the whole example, as written
check(full["model"])
os.environ.pop("HF_TOKEN")
check(TheWorld.from_pretrained("alice/run", token={SECRET!r}))
check(TheWorld.from_pretrained("alice/run", token={SECRET!r}, subfolder="final"))
print("LOADED OK")
"""
    result = run(cwd, hub.url, hf_home, "-c", check, program=[sys.executable], env={"HF_TOKEN": SECRET})
    assert result.returncode == 0 and "LOADED OK" in result.stdout, result.stderr[-4000:]


def test_resume_from_hf_reproduces_the_straight_run(pushed, demo_dir, hub, hf_home, tmp_path):
    cwd, _ = pushed
    resumed = workdir(demo_dir, tmp_path / "resumed")
    # main's last-checkpoint/ is the finished step 6: resume from the commit of step 4.
    step_4 = next(c["oid"] for c in hub.commits("alice/run") if c["message"] == "Training in progress, step 4")
    result = run(resumed, hub.url, hf_home, *SHORT, "--ckpt_path", f"hf://alice/run@{step_4}", "--hf_token", SECRET,
                 fresh_interpreter=False)
    assert result.returncode == 0, result.stderr[-4000:]
    straight = load_file(cwd / "runs/demo/checkpoints/final/model.safetensors")
    again = load_file(resumed / "runs/demo/checkpoints/final/model.safetensors")
    assert straight.keys() == again.keys()
    for key in straight:
        assert torch.allclose(straight[key], again[key], atol=1e-6), key
    assert not (resumed / "runs/demo/checkpoints/checkpoint-4").exists(), "it resumed after step 4"
    # The rows before step 4 came from the Hub's provenance/ files; those after, from this run.
    assert provenance(resumed / "runs/demo/checkpoints/final") == provenance(cwd / "runs/demo/checkpoints/final")


def test_token_from_yaml_stays_out_of_every_file_and_init_from_hf(pushed, demo_dir, hub, hf_home, tmp_path):
    cwd = workdir(demo_dir, tmp_path / "run")
    user_config = tmp_path / "hub.yaml"  # the user's own file, outside the run's output
    user_config.write_text(yaml.safe_dump({"hub": {"push_to_hub": True, "hub_model_id": "alice/from-yaml",
                                                   "hf_token": SECRET}}))
    # init_from: the pushed private repo's final/ weights, fetched with the YAML's token.
    result = run(cwd, hub.url, hf_home, "--config", user_config, "--trainer.max_steps", "2",
                 "--checkpoint.every_n_train_steps", "2", "--trainer.val_check_interval", "100",
                 "--model.init_from", "hf://alice/run/final", fresh_interpreter=False)
    assert result.returncode == 0, result.stderr[-4000:]
    files = hub.files("alice/from-yaml")
    # The provenance of the pushed run's final/ (stage 0) went on with the new stage's rows.
    deltas = {f for f in files if f.startswith("provenance/")}
    assert set(files) == ROOT | FINAL | {"loss_curve.png"} | deltas and len(deltas) == 3
    history = json.loads(files["final/provenance.json"])
    assert history["stage"] == 1 and sum(d["rows"] for d in history["deltas"] if d["stage"] == 0) == 48
    init_from = Path(yaml.safe_load(next(cwd.rglob("hparams.yaml")).read_text())["init_from"])
    assert (init_from / "model.safetensors").read_bytes() == hub.files("alice/run")["final/model.safetensors"]
    assert_secret_nowhere(result, cwd, hub, "alice/from-yaml")


def test_hf_token_env_and_a_warm_start_from_a_repo_without_last_checkpoint(pushed, demo_dir, hub, hf_home, tmp_path):
    final = pushed[0] / "runs/demo/checkpoints/final"
    hub.create_repo("alice/weights-only")
    HfApi(endpoint=hub.url, token=SECRET).create_commit(
        "alice/weights-only", [CommitOperationAdd(p.name, str(p)) for p in final.iterdir()], commit_message="weights")
    cwd = workdir(demo_dir, tmp_path)
    result = run(cwd, hub.url, hf_home, "--ckpt_path", "hf://alice/weights-only", "--trainer.max_steps", "2",
                 "--checkpoint.every_n_train_steps", "2", "--trainer.val_check_interval", "100",
                 "--hub.push_to_hub", "true", "--hub.hub_model_id", "alice/from-env", "--hub.hub_strategy", "end",
                 env={"HF_TOKEN": SECRET}, fresh_interpreter=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "has no last-checkpoint/" in result.stderr and "Starting a NEW run" in result.stderr
    hparams = yaml.safe_load(next(cwd.rglob("hparams.yaml")).read_text())
    warm_start = Path(hparams["init_from"]) / "model.safetensors"
    assert warm_start.read_bytes() == (final / "model.safetensors").read_bytes()
    assert [c["message"] for c in hub.commits("alice/from-env")][1:] == ["End of training"]
    assert_secret_nowhere(result, cwd, hub, "alice/from-env")


def test_hub_down_for_the_whole_run_finishes_locally_and_exits_nonzero(demo_dir, hf_home, tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cwd = workdir(demo_dir, tmp_path)
    result = run(cwd, dead, hf_home, "--trainer.max_steps", "3", "--checkpoint.every_n_train_steps", "2",
                 "--trainer.val_check_interval", "100", "--hub.push_to_hub", "true", "--hub.hub_model_id",
                 "alice/down", "--hub.hub_strategy", "checkpoint", "--hub.hub_final_push_timeout", "3",
                 env={"HF_TOKEN": SECRET})
    assert result.returncode != 0
    assert "theworld: error: The final push to the Hub" in result.stderr and "failed" in result.stderr
    assert "final weights are intact" in result.stderr
    local = cwd / "runs/demo/checkpoints"
    assert sorted(p.name for p in (local / "checkpoint-2").iterdir()) == ["config.json", "model.safetensors",
                                                                          "provenance.json", "training_state.pt"]
    assert sorted(p.name for p in (local / "final").iterdir()) == ["config.json", "model.safetensors",
                                                                   "provenance.json"]
    assert "Traceback" not in result.stderr.split("theworld: error:")[-1]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--hub.hub_model_id", "alice/x", "--hf_token", "hf_not_a_real_token"], {},
         "Authentication failed: the Hugging Face token from --hf_token is invalid or expired"),
        (["--hub.hub_model_id", "bob/x"], {"HF_TOKEN": SECRET}, "cannot write to the 'bob' namespace"),
        (["--hub.hub_model_id", "theworld"], {"HF_TOKEN": SECRET}, "hub.hub_model_id='theworld' is not a valid"),
    ],
    ids=["bad-token", "someone-elses-namespace", "malformed-id"],
)
def test_preflight_stops_the_run_before_weights_load(demo_dir, hub, hf_home, tmp_path, args, env, expected):
    cwd = workdir(demo_dir, tmp_path)
    weight_log = cwd / "weight-loads.log"
    # Under the weight spy, which records every weight read: the error must come before the first one.
    result = run(cwd, hub.url, hf_home, "--hub.push_to_hub", "true", *args,
                 env={**env, "THEWORLD_WEIGHT_LOG": weight_log}, fresh_interpreter=False, spy_weights=True)
    assert result.returncode == 1
    assert "theworld: error: " in result.stderr and expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not weight_log.exists(), weight_log.read_text()
    assert "Loading weights" not in result.stderr and not (cwd / "runs/demo/checkpoints").exists()
