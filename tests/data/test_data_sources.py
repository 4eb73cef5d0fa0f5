import hashlib
import io
import itertools
import json
import tarfile
from collections import Counter
from urllib.error import HTTPError

import numpy as np
import pytest
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from theworld.data.decode import blur_faces, datacomp_resize, decode_image
from theworld.data.parquet import ParquetURLSource
from theworld.data.webdataset import WebDatasetSource, expand_urls, shard_writer
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
    assert set(first) == {"key", "key_kind", "image", "text", "prompt", "image_bytes", "skipped"}
    assert first["prompt"] is None, "a caption answers data.prompt"
    assert first["key_kind"] == "shard_key", "these shards' .json has no uid"
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
    # The failure comes after the last sample: it rides on that sample, counted like any other.
    assert [item["skipped"] for item in items] == [{}] * (len(items) - 1) + [{"shard_error": 1}]


# -- DataComp's own rules: face blurring, hash checks ---------------------------------------------


def _noise(height: int, width: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_a_face_blur_covers_datacomps_widened_box_and_fades_outside_it():
    image = _noise(100, 200)  # noise: any blur changes it
    blurred = np.asarray(blur_faces(image, [[0.25, 0.2, 0.5, 0.6]])).astype(int)  # x 50..100, y 20..60
    before = np.asarray(image).astype(int)
    # DataComp's widening: 10% of the longer side (50 px) on every side; sigma a tenth of that side.
    full = np.asarray(image.filter(ImageFilter.GaussianBlur(5.0))).astype(int)
    assert np.abs(blurred[15:65, 45:105] - full[15:65, 45:105]).max() <= 1, "the widened box is wholly blurred"
    outside = np.ones(before.shape[:2], dtype=bool)
    outside[:65 + 20, 45 - 20:105 + 20] = False
    assert np.array_equal(blurred[outside], before[outside]), "beyond 4 sigma of the widened box: untouched"
    edge = np.abs(blurred[40, 105:110] - before[40, 105:110]).mean(axis=-1)  # the 5 px right of the widened box
    assert edge[0] > edge[-1] > 0, "a soft edge: the blur fades outside the box"


def test_both_of_two_faces_lose_their_detail_the_small_one_too():
    image = _noise(200, 400)
    boxes = [[0.05, 0.1, 0.55, 0.9], [0.8, 0.1, 0.84, 0.18]]  # a 200-px face and a 16-px one
    blurred = np.asarray(blur_faces(image, boxes)).astype(float)
    before = np.asarray(image).astype(float)
    for x0, y0, x1, y1 in boxes:
        box = (slice(int(y0 * 200), int(y1 * 200)), slice(int(x0 * 400), int(x1 * 400)))
        contrast_left = blurred[box].std() / before[box].std()
        assert contrast_left < 0.1, f"box {(x0, y0, x1, y1)} keeps {contrast_left:.0%} of its contrast"


def _face_rows(tmp_path, url):
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, 64, url, tmp_path / "images") | ({"face_bboxes": [[0.0, 0.0, 0.5, 0.5]]} if i else {})
            for i in range(2)]
    original = {r["uid"]: np.asarray(Image.open(tmp_path / "images" / f"{r['uid']}.jpg").convert("RGB")) for r in rows}
    return rows, original


def _assert_face_blurred(samples, rows, original, blur):
    assert np.array_equal(samples[rows[0]["uid"]], original[rows[0]["uid"]]), "no face: untouched"
    face, before = samples[rows[1]["uid"]], original[rows[1]["uid"]]
    # The 32-px box widened by 3.2 px, then 4 sigma (sigma 3.2 px) of fading: the rest is untouched.
    assert np.array_equal(face[50:, :], before[50:, :]) and np.array_equal(face[:, 50:], before[:, 50:])
    assert np.array_equal(face[:36, :36], before[:36, :36]) != blur


def test_face_boxes_of_the_metadata_are_blurred_unless_opted_out(tmp_path, serve):
    url = serve(tmp_path / "images")
    rows, original = _face_rows(tmp_path, url)
    write_rows(rows, tmp_path / "meta.parquet")
    for blur in (True, False):
        samples = {s["key"]: np.asarray(s["image"]) for s in ParquetURLSource(str(tmp_path / "meta.parquet"),
                                                                              blur_faces=blur)}
        _assert_face_blurred(samples, rows, original, blur)


def test_shard_samples_are_keyed_by_the_json_uid_and_its_face_boxes_blurred(tmp_path):
    rows, original = _face_rows(tmp_path, "http://unused")
    with shard_writer(str(tmp_path / "faces.tar")) as writer:  # as img2dataset writes DataComp's download
        for i, row in enumerate(rows):
            meta = {"uid": row["uid"], "key": make_key(i), "face_bboxes": row["face_bboxes"]}
            writer.write({"__key__": make_key(i), "jpg": (tmp_path / "images" / f"{row['uid']}.jpg").read_bytes(),
                          "txt": row["text"].encode(), "json": json.dumps(meta).encode()})
    for blur in (True, False):
        items = list(WebDatasetSource(str(tmp_path / "faces.tar"), blur_faces=blur))
        assert [(item["key"], item["key_kind"]) for item in items] == [(row["uid"], "uid") for row in rows]
        _assert_face_blurred({item["key"]: np.asarray(item["image"]) for item in items}, rows, original, blur)


def test_datacomp_resize_shrinks_to_512_before_the_blur(tmp_path, serve):
    url = serve(tmp_path / "images")
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, size, url, tmp_path / "images") for i, size in enumerate((1024, 300))]
    rows[0]["face_bboxes"] = [[0.25, 0.25, 0.5, 0.5]]
    write_rows(rows, tmp_path / "meta.parquet")
    source = ParquetURLSource(str(tmp_path / "meta.parquet"), datacomp_resize=True)
    big, small = (item["image"] for item in source)
    assert (big.size, small.size) == ((512, 512), (300, 300)), "shrunk to 512, never enlarged"
    # Blurred after the resize, as DataComp: the same as resizing the downloaded image, then blurring it.
    resized = datacomp_resize(Image.open(tmp_path / "images" / f"{rows[0]['uid']}.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(big), np.asarray(blur_faces(resized, rows[0]["face_bboxes"])))


def test_bytes_that_differ_from_the_metadata_sha256_are_a_hash_mismatch(tmp_path, serve):
    url = serve(tmp_path / "images")
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, 64, url, tmp_path / "images") for i in range(4)]
    rows[2]["sha256"] = rows[1]["sha256"]  # as if the server now sends another image than the one listed
    rows[3]["sha256"] = rows[3]["sha256"].upper()  # the same hash in the other hex case: a match
    write_rows(rows, tmp_path / "meta.parquet")
    keys, skipped = keys_and_skips(ParquetURLSource(str(tmp_path / "meta.parquet"), verify_sha256=True))
    assert keys == [rows[i]["uid"] for i in (0, 1, 3)] and skipped == {"hash_mismatch": 1}
    keys, skipped = keys_and_skips(ParquetURLSource(str(tmp_path / "meta.parquet")))
    assert len(keys) == 4 and skipped == {}, "verify_sha256 is opt-in"


# -- DataComp's pool: opt-outs, subset files, filters on every source ------------------------------


def _shards_of(rows, tmp_path, name="pool.tar"):
    """``rows`` as img2dataset writes them with DataComp's arguments: the image, its caption, a .json with the uid
    and the sha256 of the bytes it downloaded."""
    with shard_writer(str(tmp_path / name)) as writer:
        for i, row in enumerate(rows):
            data = (tmp_path / "images" / f"{row['uid']}.jpg").read_bytes()
            meta = {"uid": row["uid"], "key": make_key(i), "sha256": hashlib.sha256(data).hexdigest()}
            writer.write({"__key__": make_key(i), "jpg": data, "txt": row["text"].encode(),
                          "json": json.dumps(meta).encode()})
    return str(tmp_path / name)


def test_images_whose_server_opts_out_are_skipped_as_img2dataset_refuses_them(tmp_path, serve):
    headers = {}
    url = serve(tmp_path / "images", headers=headers)
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, 64, url, tmp_path / "images") for i in range(6)]
    for i, tag in {1: "noai", 2: "NoImageIndex, nofollow", 3: "otherbot: noai", 4: "noarchive"}.items():
        headers[f"/{rows[i]['uid']}.jpg"] = {"X-Robots-Tag": tag}
    write_rows(rows, tmp_path / "meta.parquet")
    keys, skipped = keys_and_skips(ParquetURLSource(str(tmp_path / "meta.parquet")))
    # img2dataset 1.40.0 (no agent token, as DataComp runs it): another crawler's line and other directives pass.
    assert keys == [rows[i]["uid"] for i in (0, 3, 4, 5)] and skipped == {"opted_out": 2}
    keys, skipped = keys_and_skips(ParquetURLSource(str(tmp_path / "meta.parquet"), disallowed_header_directives=()))
    assert len(keys) == 6 and skipped == {}, "an empty list downloads them anyway"


def _subset(path, uids):
    """A subset file as DataComp's filtering track writes it: sorted (high, low) halves of each uid."""
    np.save(path, np.sort(np.array([divmod(int(uid, 16), 1 << 64) for uid in uids], np.dtype("u8,u8"))))
    return str(path)


def test_a_subset_file_selects_the_pool_on_both_sources(tmp_path, serve):
    url = serve(tmp_path / "images")
    (tmp_path / "images").mkdir(exist_ok=True)
    # uids above 2**64 too: both halves count
    rows = [good_row(0, i, 64, url, tmp_path / "images") for i in (1, 2, 3, 2**64 + 1, 2**64 + 2, 2**70)]
    chosen = [rows[i]["uid"] for i in (0, 3, 5)] + ["f" * 32]  # and a uid not in the pool
    subset = _subset(tmp_path / "subset.npy", chosen)
    write_rows(rows, tmp_path / "meta.parquet")
    for source in (ParquetURLSource(str(tmp_path / "meta.parquet"), subset_file=subset),
                   WebDatasetSource(_shards_of(rows, tmp_path), subset_file=subset)):
        keys, skipped = keys_and_skips(source)
        assert keys == chosen[:3] and skipped == {"not_in_subset": 3}, source


def test_shards_filter_by_clip_score_and_sha256_from_the_metadata_joined_by_uid(tmp_path):
    (tmp_path / "images").mkdir()
    rows = [good_row(0, i, 64, "http://unused", tmp_path / "images") for i in range(5)]
    shards = _shards_of(rows, tmp_path)
    rows[1]["clip_b32_similarity_score"] = 0.1
    rows[2]["clip_b32_similarity_score"] = None
    rows[3]["sha256"] = "0" * 64  # the metadata's image is not the one img2dataset downloaded
    rows[4]["sha256"] = rows[4]["sha256"].upper()
    write_rows(rows, tmp_path / "meta.parquet")
    keys, skipped = keys_and_skips(WebDatasetSource(shards, metadata=str(tmp_path / "meta.parquet"),
                                                    clip_score_threshold=0.2, verify_sha256=True))
    assert keys == [rows[0]["uid"], rows[4]["uid"]]
    assert skipped == {"low_clip_score": 2, "hash_mismatch": 1}
    write_rows(rows[1:], tmp_path / "meta.parquet")  # a sample whose uid the metadata lacks has no score
    keys, skipped = keys_and_skips(WebDatasetSource(shards, metadata=str(tmp_path / "meta.parquet"),
                                                    clip_score_threshold=0.2))
    assert keys == [rows[3]["uid"], rows[4]["uid"]] and skipped == {"low_clip_score": 3}


def test_the_edges_of_datacomps_downloader(tmp_path, serve):
    url = serve(tmp_path / "images")
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, 64, url, tmp_path / "images") for i in range(3)]
    # A GIF, which DataComp's downloader (OpenCV) cannot decode, and a caption that is not UTF-8 in a string column
    # (Parquet says strings are UTF-8; a writer that skips the check makes such a file).
    gif = io.BytesIO()
    Image.open(tmp_path / "images" / f"{rows[1]['uid']}.jpg").save(gif, "GIF")
    (tmp_path / "images" / f"{rows[1]['uid']}.jpg").write_bytes(gif.getvalue())
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    texts = [row["text"].encode() for row in rows[:2]] + [b"a red \xff circle"]
    table = table.set_column(table.schema.get_field_index("text"), "text",
                             pa.array(texts, pa.binary()).view(pa.string()))
    pq.write_table(table, tmp_path / "meta.parquet")
    keys, skipped = keys_and_skips(ParquetURLSource(str(tmp_path / "meta.parquet")))
    assert keys == [rows[0]["uid"]] and skipped == {"unsupported_format": 1, "bad_utf8": 1}
