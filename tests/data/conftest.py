"""Shared synthetic data for the data-source tests: written once per session, small and fast."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from theworld.testing.http import serve_directory
from theworld.testing.synthetic import make_key, write_parquet, write_webdataset_shards

PARQUET_FILES, PER_FILE = 2, 20


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """8 img2dataset-style shards of 5 samples: ``.dir``, ``.keys`` (in order), ``.num``, ``.per_shard``."""
    out = tmp_path_factory.mktemp("wds")
    num, per_shard = 8, 5
    write_webdataset_shards(out, num, per_shard, seed=0)
    return SimpleNamespace(dir=out, keys=[make_key(i) for i in range(num * per_shard)], num=num, per_shard=per_shard)


@pytest.fixture(scope="session")
def parquet_data(tmp_path_factory):
    """Two parquet files of 20 rows whose images a local server serves: ``(glob, uids)``."""
    out = tmp_path_factory.mktemp("parquet")
    url, stop = serve_directory(out / "images")
    uids = []
    for part in range(PARQUET_FILES):
        write_parquet(out / f"part-{part}.parquet", PER_FILE, url, start_index=part * PER_FILE)
        uids += [f"{i:032x}" for i in range(part * PER_FILE, (part + 1) * PER_FILE)]
    yield str(out / "part-*.parquet"), uids
    stop()
