import hashlib
import io
import json
import random
import tarfile

import pyarrow.parquet as pq
import pytest
from PIL import Image

from theworld.testing import synthetic
from theworld.testing.synthetic import COLORS, render_sample, write_parquet, write_webdataset_shards


def _digest(paths):
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]


def test_render_sample_caption_names_what_is_drawn():
    for seed in range(30):
        image, caption = render_sample(random.Random(seed), size=64)
        article, color, shape, on, a, background, word = caption.split()
        assert (article, on, a, word) == ("a", "on", "a", "background")
        assert shape in synthetic.SHAPES and color != background
        assert image.mode == "RGB" and image.size == (64, 64)
        drawn = {rgb for _, rgb in image.getcolors(maxcolors=64 * 64)}
        assert drawn == {COLORS[color], COLORS[background]}
        # Same RNG state, same sample: captions are a function of the drawing.
        assert render_sample(random.Random(seed), size=64)[1] == caption


def test_webdataset_shards_are_deterministic_and_img2dataset_shaped(tmp_path):
    a = write_webdataset_shards(tmp_path / "a", num_shards=2, samples_per_shard=3, seed=7)
    b = write_webdataset_shards(tmp_path / "b", num_shards=2, samples_per_shard=3, seed=7)
    c = write_webdataset_shards(tmp_path / "c", num_shards=2, samples_per_shard=3, seed=8)
    assert [p.rsplit("/", 1)[1] for p in a] == ["shard-00000.tar", "shard-00001.tar"]
    assert _digest(a) == _digest(b) and _digest(a) != _digest(c)

    with tarfile.open(a[1]) as tar:
        names = tar.getnames()
        assert sorted(names[:3]) == ["000000003.jpg", "000000003.json", "000000003.txt"]
        meta = json.loads(tar.extractfile("000000003.json").read())
        caption = tar.extractfile("000000003.txt").read().decode()
        image = Image.open(io.BytesIO(tar.extractfile("000000003.jpg").read()))
    assert meta == {"key": "000000003", "caption": caption, "width": 64, "height": 64}
    assert image.format == "JPEG" and image.size == (64, 64)


def test_parquet_is_deterministic_and_datacomp_shaped(tmp_path):
    path = write_parquet(tmp_path / "a" / "m.parquet", 5, "http://host:1/", seed=3)
    again = write_parquet(tmp_path / "b" / "m.parquet", 5, "http://host:1", seed=3)
    table = pq.read_table(path)
    assert table.column_names == [  # DataComp's metadata columns
        "uid",
        "url",
        "text",
        "original_width",
        "original_height",
        "clip_b32_similarity_score",
        "clip_l14_similarity_score",
        "face_bboxes",
        "sha256",
    ]
    assert table.equals(pq.read_table(again))
    row = table.to_pylist()[0]
    assert row["url"] == f"http://host:1/{row['uid']}.jpg"
    assert (tmp_path / "a" / "images" / f"{row['uid']}.jpg").exists()
    assert isinstance(row["clip_b32_similarity_score"], float)


def test_same_sample_in_both_formats(tmp_path):
    write_webdataset_shards(tmp_path, 1, 2, seed=5)
    write_parquet(tmp_path / "m.parquet", 2, "http://h", seed=5)
    with tarfile.open(tmp_path / "shard-00000.tar") as tar:
        tar_caption = tar.extractfile("000000001.txt").read().decode()
    assert pq.read_table(tmp_path / "m.parquet")["text"][1].as_py() == tar_caption


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_cli(tmp_path, fmt, capsys):
    synthetic.main(["--out", str(tmp_path), "--format", fmt, "--shards", "2", "--per-shard", "3", "--seed", "1"])
    printed = capsys.readouterr().out
    if fmt == "webdataset":
        assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-00000.tar", "shard-00001.tar"]
    else:
        uids = [u for p in sorted(tmp_path.glob("*.parquet")) for u in pq.read_table(p)["uid"].to_pylist()]
        assert len(set(uids)) == 6 and len(list((tmp_path / "images").iterdir())) == 6
        assert "http.server" in printed
