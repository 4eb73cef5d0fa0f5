"""DataComp metadata streamed from a Hub dataset repo (the local Hub) through `datasets`, as `data.dataset_name`
does with mlfoundations/datacomp_*: split over ranks and loader workers, trained on, resumed exactly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from huggingface_hub import HfApi
from support.accounts import ALICE
from support.cli_runs import assert_resumed, assert_same_weights, fit, provenance

from theworld.testing.http import serve_directory
from theworld.testing.synthetic import uid_of, write_parquet

DATASET = "alice/datacomp-mini"
ROWS_PER_FILE, FILES = 40, 2


@pytest.fixture(scope="module")
def hub_dataset(module_hub, tmp_path_factory):
    """A private dataset repo of DataComp-schema parquet (data/train-*.parquet) whose image URLs a local server
    answers; returns the environment a process needs to find it (the token comes separately)."""
    root = tmp_path_factory.mktemp("hub_dataset")
    url, stop = serve_directory(root / "images")
    for part in range(FILES):
        write_parquet(root / f"repo/data/train-{part:05d}-of-{FILES:05d}.parquet", ROWS_PER_FILE, url,
                      image_dir=root / "images", start_index=part * ROWS_PER_FILE)
    api = HfApi(endpoint=module_hub.url, token=ALICE)
    api.create_repo(DATASET, repo_type="dataset", private=True)
    api.upload_folder(folder_path=root / "repo", repo_id=DATASET, repo_type="dataset")
    yield {"HF_ENDPOINT": module_hub.url, "HF_HOME": str(root / "hf_home")}
    stop()


SHARDING = """
import json, sys
from torch.utils.data import DataLoader
from theworld.data.parquet import ParquetURLSource

keys = {}
for rank in range(2):
    source = ParquetURLSource(dataset_name=sys.argv[1], rank=rank, world_size=2, blur_faces=True, verify_sha256=True,
                              subset_file=sys.argv[2] if len(sys.argv) > 2 else None)
    for sample in DataLoader(source, batch_size=None, num_workers=2):
        keys.setdefault(f"{rank}", []).append(sample["key"])
print(json.dumps(keys))
"""


def test_ranks_and_workers_split_the_hub_dataset_with_no_row_twice(hub_dataset):
    result = subprocess.run([sys.executable, "-c", SHARDING, DATASET], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **hub_dataset, "HF_TOKEN": ALICE})
    assert result.returncode == 0, result.stderr[-4000:]
    keys = json.loads(result.stdout)
    every = [key for rank_keys in keys.values() for key in rank_keys]
    assert sorted(every) == [uid_of(i) for i in range(ROWS_PER_FILE * FILES)], "each row once, none lost"
    # Row i goes to consumer i % 4 (rank-major): rank 0's workers read rows 0, 1, 4, 5, ...
    assert sorted(keys["0"]) == [uid_of(i) for i in range(ROWS_PER_FILE * FILES) if i % 4 < 2]


def test_a_subset_file_selects_the_hub_datasets_rows(hub_dataset, tmp_path):
    chosen = [uid_of(i) for i in range(ROWS_PER_FILE * FILES) if i % 3 == 0]
    subset = tmp_path / "subset.npy"  # DataComp's layout: each uid's high and low 64 bits, sorted
    np.save(subset, np.sort(np.array([divmod(int(uid, 16), 1 << 64) for uid in chosen], np.dtype("u8,u8"))))
    result = subprocess.run([sys.executable, "-c", SHARDING, DATASET, str(subset)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, **hub_dataset, "HF_TOKEN": ALICE})
    assert result.returncode == 0, result.stderr[-4000:]
    assert sorted(key for rank_keys in json.loads(result.stdout).values() for key in rank_keys) == chosen


def test_training_streams_from_the_hub_and_resumes_exactly(hub_dataset, demo_dir, tmp_path):
    args = ["--trainer.max_steps", "4", "--checkpoint.every_n_train_steps", "2", "--checkpoint.save_top_k", "-1",
            "--trainer.limit_val_batches", "0", "--data.batch_size", "8", "--data.num_workers", "2",
            "--data.source", "hf", "--data.train_data", "null", "--data.val_data", "null",
            "--data.dataset_name", DATASET, "--data.verify_sha256", "true",
            "--hf_token", ALICE]  # private: the loader workers read it with the run's token

    def run(root, *more):
        result = fit(demo_dir, *args, "--trainer.default_root_dir", root, "--trainer.logger.init_args.save_dir", root,
                     *more, env=hub_dataset, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(straight)
    trained = provenance(straight / "checkpoints/final")
    keys = [key for _, _, key in trained]
    assert len(keys) == len(set(keys)) == 32 and set(keys) <= {uid_of(i) for i in range(ROWS_PER_FILE * FILES)}

    run(resumed, "--ckpt_path", straight / "checkpoints/checkpoint-2")
    assert_resumed(resumed, straight, from_step=2, to_step=4)
    assert_same_weights(straight / "checkpoints/final", resumed / "checkpoints/final")
    assert provenance(resumed / "checkpoints/final") == trained
