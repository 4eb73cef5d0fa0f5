"""`theworld` as a user runs it: real subprocesses (each a fresh interpreter), real configs."""

import csv
import re
from pathlib import Path

import pytest
from support.cli_runs import REPO, fit, theworld
from support.hub_cli import workdir


def read_losses(metrics_csv: Path) -> list[float]:
    with open(metrics_csv) as fh:
        return [float(row["train/loss"]) for row in csv.DictReader(fh) if row.get("train/loss")]


def test_datacomp_config_resolves_with_the_real_ids(tmp_path):
    result = theworld("fit", "--config", REPO / "configs/datacomp.yaml", "--print_config", cwd=tmp_path,
                      fresh_interpreter=True)
    assert result.returncode == 0, result.stderr[-4000:]
    import yaml

    config = yaml.safe_load(result.stdout)
    assert config["model"]["gemma_model_name"] == "google/gemma-3-4b-it"
    assert config["model"]["cosmos_model_name"] == "nvidia/Cosmos-Predict2-2B-Video2World"
    assert config["trainer"]["logger"]["init_args"]["project"] == "theworld-datacomp"
    assert config["hub"]["push_to_hub"] is False
    assert config["data"]["dataset_name"] == "mlfoundations/datacomp_small"


def test_override_flags_reach_the_config(tmp_path):
    result = theworld("fit", "--config", REPO / "configs/datacomp.yaml", "--model.freeze_gemma_language", "false",
                      "--trainer.max_steps", "100", "--hub.hub_model_id", "me/x", "--print_config", cwd=tmp_path,
                      fresh_interpreter=True)
    assert result.returncode == 0, result.stderr[-4000:]
    import yaml

    config = yaml.safe_load(result.stdout)
    assert config["model"]["freeze_gemma_language"] is False
    assert config["trainer"]["max_steps"] == 100
    assert config["hub"]["hub_model_id"] == "me/x"


def test_print_config_never_shows_a_token(tmp_path):
    config = tmp_path / "with_token.yaml"
    config.write_text("hub:\n  hf_token: hf_fromYamlSecret123\n")
    result = theworld("fit", "--config", REPO / "configs/datacomp.yaml", "--config", config, "--hf_token",
                      "hf_fromFlagSecret456", "--print_config", cwd=tmp_path, fresh_interpreter=True)
    assert result.returncode == 0, result.stderr[-4000:]
    import yaml

    printed = yaml.safe_load(result.stdout)
    assert printed["hf_token"] is None and printed["hub"]["hf_token"] is None
    assert "Secret" not in result.stdout + result.stderr


@pytest.mark.slow
def test_compiled_decoder_trains_like_the_eager_one(demo_dir, tmp_path):
    """`--model.compile true` compiles Gemma's decoder layers in place (about a minute on CPU)."""
    runs = {}
    for compiled in ("false", "true"):
        root = tmp_path / compiled
        result = theworld("fit", "--config", REPO / "configs/demo.yaml", "--trainer.max_steps", "3",
                          "--model.compile", compiled, "--data.num_workers", "0", "--trainer.default_root_dir", root,
                          "--trainer.logger.init_args.save_dir", root, cwd=demo_dir,
                          fresh_interpreter=True)
        assert result.returncode == 0, result.stderr[-4000:]
        runs[compiled] = read_losses(sorted(root.glob("logs/version_*/metrics.csv"))[-1])
    assert runs["true"] == pytest.approx(runs["false"], rel=1e-3)


def test_the_demo_without_its_assets_says_how_to_write_them(tmp_path):
    result = theworld("fit", "--config", REPO / "configs/demo.yaml", cwd=tmp_path, fresh_interpreter=True)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"demo_assets/, which is not in {tmp_path}" in result.stderr
    assert "`python -m theworld.testing.demo_assets`" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def fit_elsewhere(demo_dir, tmp_path_factory):
    """3 steps of configs/demo.yaml (whose logger writes to runs/demo) with only --trainer.default_root_dir given:
    (the run's folder, its stderr, where it was asked to go)."""
    cwd = workdir(demo_dir, tmp_path_factory.mktemp("elsewhere"))
    result = fit(cwd, "--trainer.default_root_dir", "elsewhere", "--trainer.max_steps", "3", "--data.batch_size", "4")
    assert result.returncode == 0, result.stderr[-4000:]
    return cwd, result.stderr, cwd / "elsewhere"


def test_the_logs_follow_default_root_dir_given_alone(fit_elsewhere):
    cwd, stderr, asked = fit_elsewhere
    assert (asked / "logs/version_0/metrics.csv").is_file()
    assert f"logs in {asked / 'logs/version_0'}" in stderr
    assert not (cwd / "runs").exists(), "nothing is left in the config's runs/demo"


def test_the_first_progress_line_comes_after_the_first_step(fit_elsewhere):
    """In a log (no terminal): a line at step 1, with the first step's time, before the last step's line."""
    _, stderr, _ = fit_elsewhere
    lines = re.findall(r"^step (\d+)/3 \| train/loss [\d.]+ \| (.*)$", stderr, re.MULTILINE)
    assert [int(step) for step, _ in lines] == [1, 3], stderr[-3000:]
    assert re.search(r"first step [\d.]+ s$", lines[0][1]) and re.search(r"ETA \d\d:\d\d:\d\d$", lines[1][1])
