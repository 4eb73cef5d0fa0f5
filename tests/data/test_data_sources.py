import io
import itertools
import tarfile
from collections import Counter
from urllib.error import HTTPError

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from theworld.data.decode import blur_faces, decode_image
from theworld.data.parquet import ParquetURLSource
from theworld.data.webdataset import WebDatasetSource, expand_urls
from theworld.retry import with_retries
from theworld.testing.bad_samples import write_bad_samples
from theworld.testing.synthetic import encode_image, good_row, make_key, write_rows, write_webdataset_shards


def collate_keys(batch):
    return [item["key"] for item in batch]


def collate_skipped(batch):
    return [(item["key"], item["skipped"]) for item in batch]


def keys_from(source, num_workers=2, batch_size=4):
    loader = DataLoader(source, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_keys)
    return [key for batch in loader for key in batch]


def keys_and_skips(source, num_workers=0):
    loader = DataLoader(source, batch_size=4, num_workers=num_workers, collate_fn=collate_skipped)
    keys, skipped = [], Counter()
    for batch in loader:
        for key, counts in batch:
            keys.append(key)
            skipped.update(counts)
    return keys, dict(skipped)


def wds(shards, **kwargs):
    return WebDatasetSource(str(shards.dir / "shard-{00000..00007}.tar"), **kwargs)


# -- yielding everything ------------------------------------------------------------------------


def test_webdataset_yields_every_sample_as_raw_rgb(shards):
    items = list(wds(shards))
    assert [item["key"] for item in items] == shards.keys
    first = items[0]
    assert set(first) == {"key", "image", "text", "image_bytes", "skipped"}
    assert isinstance(first["image"], Image.Image) and first["image"].mode == "RGB"
    assert first["text"].startswith("a ") and first["skipped"] == {}
    with tarfile.open(shards.dir / "shard-00000.tar") as tar:
        assert first["text"] == tar.extractfile("000000000.txt").read().decode()


def test_parquet_yields_every_row(parquet_data):
    pattern, uids = parquet_data
    items = list(ParquetURLSource(pattern))
    assert [item["key"] for item in items] == uids
    assert all(item["image"].mode == "RGB" and item["skipped"] == {} for item in items)


def test_transform_output_carries_skipped(shards):
    def transform(sample):
        return {"key": sample["key"], "size": sample["image"].size}

    item = next(iter(wds(shards, transform=transform)))
    assert item == {"key": shards.keys[0], "size": (64, 64), "skipped": {}}


# -- splitting across ranks and workers ---------------------------------------------------------


@pytest.mark.parametrize("num_shards", [8, 3])  # 3 < 2 ranks x 2 workers: split samples
def test_webdataset_two_ranks_two_workers_see_each_sample_once(shards, num_shards):
    urls = [str(shards.dir / f"shard-{i:05d}.tar") for i in range(num_shards)]
    per_rank = [keys_from(WebDatasetSource(urls, rank=rank, world_size=2)) for rank in (0, 1)]
    seen = per_rank[0] + per_rank[1]
    assert sorted(seen) == shards.keys[: num_shards * 5]
    assert all(keys for keys in per_rank)


def test_parquet_two_ranks_two_workers_see_each_row_once(parquet_data):
    pattern, uids = parquet_data
    per_rank = [keys_from(ParquetURLSource(pattern, rank=rank, world_size=2)) for rank in (0, 1)]
    assert sorted(per_rank[0] + per_rank[1]) == uids
    assert len(per_rank[0]) == len(per_rank[1]) == len(uids) // 2


def test_rank_from_environment(shards, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    keys = [item["key"] for item in wds(shards)]
    assert keys == [k for i, k in enumerate(shards.keys) if (i // 5) % 2 == 1]  # odd shards


def test_num_samples_gives_equal_length_per_rank(shards):
    per_rank = [keys_from(wds(shards, num_samples=22, rank=r, world_size=2), batch_size=1) for r in (0, 1)]
    assert [len(keys) for keys in per_rank] == [11, 11]
    assert len(wds(shards, num_samples=22, rank=0, world_size=2)) == 11
    with pytest.raises(TypeError):
        len(wds(shards))


# -- epochs and resume ----------------------------------------------------------------------------


def test_set_epoch_reshuffles_deterministically(shards):
    def order(epoch, seed=0):
        source = wds(shards, shuffle_buffer=8, seed=seed)
        source.set_epoch(epoch)
        return [item["key"] for item in source]

    assert order(0) == order(0)
    assert order(1) != order(0) and sorted(order(1)) == shards.keys
    assert order(0, seed=1) != order(0)


def _resume_round_trip(make_source, batches_before, num_workers=2, batch_size=3):
    loader = StatefulDataLoader(make_source(), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_keys)
    before = []
    for step, batch in enumerate(loader):
        before += batch
        if step + 1 == batches_before:
            break
    state = loader.state_dict()
    del loader
    resumed = StatefulDataLoader(make_source(), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_keys)
    resumed.load_state_dict(state)
    after = [key for batch in resumed for key in batch]
    return before, after


@pytest.mark.parametrize("batches_before", [1, 5])
def test_webdataset_resume_mid_epoch(shards, batches_before):
    before, after = _resume_round_trip(lambda: wds(shards), batches_before)
    assert len(before) == 3 * batches_before
    assert sorted(before + after) == shards.keys  # no gaps, no repeats


def test_webdataset_resume_when_splitting_samples(shards):
    urls = [str(shards.dir / "shard-00000.tar")]  # 1 shard, 2 workers: per-sample split
    before, after = _resume_round_trip(lambda: WebDatasetSource(urls), 1, batch_size=2)
    assert sorted(before + after) == shards.keys[:5]


def test_parquet_resume_mid_epoch(parquet_data):
    pattern, uids = parquet_data
    before, after = _resume_round_trip(lambda: ParquetURLSource(pattern, download_threads=2), 3)
    assert sorted(before + after) == sorted(uids)


def test_resampled_shards_are_drawn_whole_with_replacement_seeded_and_without_end(shards):
    def drawn(epoch=0, seed=0, n=120):
        source = wds(shards, resampled=True, seed=seed)
        source.set_epoch(epoch)
        return list(itertools.islice((item["key"] for item in source), n))

    keys = drawn()
    assert len(keys) == 120 > 2 * len(shards.keys), "the stream does not end with the shard list"
    shard_of = [int(key) // shards.per_shard for key in keys]
    runs = [shard_of[i : i + shards.per_shard] for i in range(0, len(keys), shards.per_shard)]
    assert all(len(set(run)) == 1 for run in runs), "whole shards, one after another"
    drawn_shards = [run[0] for run in runs]
    assert len(set(drawn_shards)) < len(drawn_shards), "with replacement"
    assert keys == drawn() and keys != drawn(epoch=1) and keys != drawn(seed=1)


def test_resampled_resume_continues_the_draws_exactly(shards):
    def source():
        return wds(shards, resampled=True, num_samples=60)  # 30 a worker, then the epoch ends

    straight = keys_from(source(), num_workers=2, batch_size=3)
    before, after = _resume_round_trip(source, 7)
    assert len(straight) == 60 and before + after == straight


def test_resume_in_process_and_epoch_comes_from_state(shards):
    source = wds(shards, shuffle_buffer=0)
    source.set_epoch(3)
    stream = iter(source)
    before = [next(stream)["key"] for _ in range(7)]
    state = source.state_dict()
    assert state == {"epoch": 3, "consumer": 0, "num_consumers": 1, "yielded": 7, "shard": 1, "offset": 2}
    fresh = wds(shards)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert before + [item["key"] for item in fresh] == shards.keys
    assert [item["key"] for item in fresh] == shards.keys  # the loaded state is used once


def test_resume_with_shuffle_buffer_loses_at_most_the_buffer(shards):
    before, after = _resume_round_trip(lambda: wds(shards, shuffle_buffer=4), 2)
    assert len(set(before + after)) == len(before + after)
    assert len(shards.keys) - len(before + after) <= 4 * 2  # buffer x workers


def test_resume_with_another_layout_is_refused(shards):
    state = wds(shards, rank=0, world_size=2).state_dict()
    source = wds(shards)
    source.load_state_dict(state)
    with pytest.raises(ValueError, match="same world_size and num_workers"):
        next(iter(source))


# -- holdout --------------------------------------------------------------------------------------


def test_parquet_skip_first_and_take_first_are_disjoint(parquet_data):
    pattern, uids = parquet_data
    val = [item["key"] for item in ParquetURLSource(pattern, take_first=6)]
    train = keys_from(ParquetURLSource(pattern, skip_first=6))
    assert val == uids[:6]
    assert sorted(train) == uids[6:]


def test_webdataset_skip_keys_holdout(shards):
    def is_val(key):
        return int(key) % 10 == 0

    def not_val(key):
        return not is_val(key)

    train = keys_from(wds(shards, skip_keys=is_val))
    val = [item["key"] for item in wds(shards, skip_keys=not_val)]
    assert val == [k for k in shards.keys if is_val(k)]
    assert sorted(train + val) == shards.keys


# -- bad samples ----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_webdataset_bad_samples_are_counted_by_reason(tmp_path, num_workers):
    planted = write_bad_samples(tmp_path, "webdataset")
    keys, skipped = keys_and_skips(WebDatasetSource(planted.path), num_workers)
    assert sorted(keys) == sorted(planted.good_keys)
    assert skipped == planted.expected


def test_parquet_bad_samples_are_counted_by_reason(tmp_path, serve):
    delays = {}
    url = serve(tmp_path / "images", delay_s=delays)
    planted = write_bad_samples(tmp_path, "parquet", image_url_base=url)
    delays.update({path: 30 for path in planted.slow_paths})
    source = ParquetURLSource(planted.path, clip_score_threshold=0.2, download_timeout_s=0.5, download_retries=1,
                              download_backoff_s=0.05)
    keys, skipped = keys_and_skips(source)
    assert keys == planted.good_keys
    assert skipped == planted.expected
    assert {"http_error", "timeout", "low_clip_score", "bad_utf8", "converted_mode"} <= set(skipped)


def test_decode_image_converts_modes_and_composites_alpha_on_white():
    clear = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    image, reason, converted = decode_image(encode_image(clear, "PNG"), 32, 10**6)
    assert (reason, converted, image.mode, image.getpixel((0, 0))) == (None, True, "RGB", (255, 255, 255))
    gray = encode_image(Image.new("L", (40, 40), 128))
    image, reason, converted = decode_image(gray, 32, 10**6)
    assert (reason, converted, image.getpixel((0, 0))) == (None, True, (128, 128, 128))
    assert decode_image(gray, 32, 40 * 40 - 1)[1] == "decompression_bomb"  # our limit, not PIL's


def test_retries_only_transient_errors():
    calls = []

    def failing(code):
        def fn():
            calls.append(code)
            raise HTTPError("http://x", code, "err", None, None)

        return fn

    for code, attempts in [(503, 3), (404, 1)]:
        calls.clear()
        with pytest.raises(HTTPError):
            with_retries(failing(code), what="x", retries=2, wait_s=0.1, sleep=lambda s: None)
        assert len(calls) == attempts


# -- no data --------------------------------------------------------------------------------------


def test_glob_matching_nothing_names_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-"):
        WebDatasetSource(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(FileNotFoundError, match="nothing-"):
        ParquetURLSource(str(tmp_path / "nothing-*.parquet"))


def _all_corrupt_shard(path, n):
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            for ext, data in (("jpg", b"junk"), ("txt", b"caption")):
                info = tarfile.TarInfo(f"{make_key(i)}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_source_without_usable_samples_raises(tmp_path):
    path = _all_corrupt_shard(tmp_path / "bad.tar", 5)
    with pytest.raises(RuntimeError, match=r"No usable samples .* end of its stream: skipped \{'corrupt': 5\}"):
        list(WebDatasetSource(path))
    with pytest.raises(RuntimeError, match="after 3 consecutive bad samples"):
        list(WebDatasetSource(path, max_consecutive_bad=3))


def test_parquet_with_dead_urls_raises(tmp_path, serve):
    url = serve(tmp_path / "images")
    planted = write_bad_samples(tmp_path, "parquet", image_url_base=url + "/missing")
    with pytest.raises(RuntimeError, match="No usable samples.*http_error"):
        list(ParquetURLSource(planted.path, max_consecutive_bad=10))


# -- shard URLs -----------------------------------------------------------------------------------


def test_expand_urls_braces_globs_and_directories(shards):
    braces = expand_urls(str(shards.dir / "shard-{00002..00004}.tar"))
    assert [p.rsplit("-", 1)[1] for p in braces] == ["00002.tar", "00003.tar", "00004.tar"]
    assert (
        expand_urls(str(shards.dir / "shard-*.tar"))
        == expand_urls(str(shards.dir))
        == expand_urls([str(shards.dir / "shard-0000{0..3}.tar"), str(shards.dir / "shard-0000[4-7].tar")])
    )
    assert len(expand_urls(str(shards.dir))) == shards.num
    assert expand_urls("http://h/s-{0..1}.tar") == ["http://h/s-0.tar", "http://h/s-1.tar"]


def test_http_shards_stream_and_a_missing_shard_is_counted(shards, serve):
    url = serve(shards.dir, status={"/shard-00001.tar": 404})
    keys, skipped = keys_and_skips(WebDatasetSource(url + "/shard-{00000..00007}.tar", download_retries=0), num_workers=2)
    assert sorted(keys) == [k for i, k in enumerate(shards.keys) if i // 5 != 1]
    assert skipped == {"shard_error": 1}


def test_a_missing_shard_is_counted_once_when_splitting_samples(shards, serve):
    url = serve(shards.dir, status={"/shard-00001.tar": 404})
    skipped = Counter()
    for rank in (0, 1):  # 3 shards < 2 ranks x 2 workers: every consumer reads every shard
        source = WebDatasetSource(url + "/shard-{00000..00002}.tar", download_retries=0, rank=rank, world_size=2)
        skipped.update(keys_and_skips(source, num_workers=2)[1])
    assert skipped == {"shard_error": 1}


def test_truncated_shard_keeps_the_samples_before_the_break(tmp_path):
    (path,) = write_webdataset_shards(tmp_path, 1, 4)
    data = open(path, "rb").read()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    items = list(WebDatasetSource(str(tmp_path / "cut.tar")))
    assert 0 < len(items) < 4
    assert [item["key"] for item in items] == [make_key(i) for i in range(len(items))]
    # The failure comes after the last sample, so it has no item to ride on: it is only logged.
    assert all(item["skipped"] == {} for item in items)


# -- DataComp's own rules: face blurring, hash checks ---------------------------------------------


def test_a_face_box_blurs_exactly_its_region():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (100, 200, 3), dtype=np.uint8))  # noise: any blur changes it
    blurred = np.asarray(blur_faces(image, [[0.25, 0.2, 0.5, 0.6]]))  # x 50..100, y 20..60
    before = np.asarray(image)
    inside = np.zeros(before.shape[:2], dtype=bool)
    inside[20:60, 50:100] = True
    assert np.array_equal(blurred[~inside], before[~inside]), "pixels outside the box are untouched"
    changed = np.abs(blurred[inside].astype(int) - before[inside]).mean()
    assert changed > 30, f"the face region is blurred (mean change {changed:.1f})"
    assert blurred[inside].std() < before[inside].std() / 3


def test_face_boxes_of_the_metadata_are_blurred_unless_opted_out(tmp_path, serve):
    url = serve(tmp_path / "images")
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, 64, url, tmp_path / "images") | ({"face_bboxes": [[0.0, 0.0, 0.5, 0.5]]} if i else {})
            for i in range(2)]
    write_rows(rows, tmp_path / "meta.parquet")
    original = {r["uid"]: np.asarray(Image.open(tmp_path / "images" / f"{r['uid']}.jpg").convert("RGB")) for r in rows}
    for blur in (True, False):
        samples = {s["key"]: np.asarray(s["image"]) for s in ParquetURLSource(str(tmp_path / "meta.parquet"),
                                                                              blur_faces=blur)}
        assert np.array_equal(samples[rows[0]["uid"]], original[rows[0]["uid"]]), "no face: untouched"
        face = samples[rows[1]["uid"]]
        assert np.array_equal(face[32:, :], original[rows[1]["uid"]][32:, :])
        assert np.array_equal(face[:32, :32], original[rows[1]["uid"]][:32, :32]) != blur


def test_bytes_that_differ_from_the_metadata_sha256_are_a_hash_mismatch(tmp_path, serve):
    url = serve(tmp_path / "images")
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, 64, url, tmp_path / "images") for i in range(4)]
    rows[2]["sha256"] = rows[1]["sha256"]  # as if the server now sends another image than the one listed
    write_rows(rows, tmp_path / "meta.parquet")
    keys, skipped = keys_and_skips(ParquetURLSource(str(tmp_path / "meta.parquet"), verify_sha256=True))
    assert keys == [rows[i]["uid"] for i in (0, 1, 3)] and skipped == {"hash_mismatch": 1}
    keys, skipped = keys_and_skips(ParquetURLSource(str(tmp_path / "meta.parquet")))
    assert len(keys) == 4 and skipped == {}, "verify_sha256 is opt-in"
