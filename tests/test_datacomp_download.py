"""DataComp's real downloader (img2dataset 1.40.0, DataComp's pin, with download_upstream.py's arguments) on planted
DataComp-schema metadata served over HTTP; `theworld fit` trains on its shards; our face blur against its own.

img2dataset runs in its own venv (its pins clash with ours): tests/support/img2dataset_venv.py.
"""

import hashlib
import json
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support import img2dataset_venv
from support.blur_figures import blur_figures
from support.cli_runs import fit, provenance

from theworld.data.decode import blur_faces, datacomp_resize
from theworld.data.webdataset import WebDatasetSource
from theworld.provenance import key_kinds
from theworld.testing.http import serve_directory
from theworld.testing.synthetic import encode_image, good_row, uid_of, write_rows

SUPPORT = Path(__file__).parent / "support"
# Face images: (size, boxes) - a large face beside a small one, a single face in an image img2dataset keeps at its
# size, and two faces of one size.
FACES = [((800, 600), [[0.1, 0.1, 0.45, 0.75], [0.7, 0.2, 0.74, 0.26]]),
         ((300, 240), [[0.3, 0.2, 0.6, 0.7]]),
         ((640, 640), [[0.05, 0.05, 0.35, 0.35], [0.6, 0.55, 0.9, 0.9]])]


@pytest.fixture(scope="session")
def img2dataset_python() -> Path:
    """The python of a venv holding img2dataset 1.40.0 (support/img2dataset_venv.py)."""
    return img2dataset_venv.img2dataset_python()


def _texture(size: tuple[int, int], seed: int) -> Image.Image:
    """Face-scale detail: coarse noise smoothly enlarged, with fine noise on top."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)).resize(
        size, Image.Resampling.BICUBIC)
    fine = rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(coarse) + fine, 0, 255).astype(np.uint8))


# The filters of the filtered runs: CLIP threshold, and the uids the subset file leaves out.
THRESHOLD = 0.2
OUT_OF_SUBSET = [uid_of(i) for i in (0, 1, 2)]


def _plant(root: Path, url: str, headers: dict) -> tuple[Path, dict]:
    """DataComp-schema metadata: good rows of several modes and sizes, face rows, and the failures of the issue;
    ``headers`` gets the opt-outs' X-Robots-Tag lines.

    Returns the parquet and, by uid, what must become of each row without filters: ``"trained"`` or the reason it
    is skipped (img2dataset's status, or our loader's reason for a sample img2dataset kept).
    """
    images = root / "images"
    images.mkdir(exist_ok=True)
    rows, fate = [], {}

    def add(index: int, data: bytes | None, ext: str = "jpg", **fields) -> None:
        row = good_row(0, index, 64, url, images)  # a good image, replaced below when data is given
        if data is not None:
            (images / f"{row['uid']}.jpg").unlink()
            (images / f"{row['uid']}.{ext}").write_bytes(data)
            row["url"] = f"{url}/{row['uid']}.{ext}"
            row["sha256"] = hashlib.sha256(data).hexdigest()
        rows.append({**row, **fields})

    for i in range(12):
        add(i, None)
        fate[uid_of(i)] = "trained"
    base = _texture((96, 80), 1)
    modes = [(base.convert("L"), "JPEG", "jpg"), (base.convert("RGBA"), "PNG", "png"),
             (base.convert("P"), "PNG", "png"), (_texture((700, 500), 2), "JPEG", "jpg")]
    for i, (image, fmt, ext) in enumerate(modes):
        add(20 + i, encode_image(image, fmt), ext)
        fate[uid_of(20 + i)] = "trained"
    for i, (size, boxes) in enumerate(FACES):
        add(40 + i, encode_image(_texture(size, 10 + i)), face_bboxes=boxes)
        fate[uid_of(40 + i)] = "trained"
    add(60, None, url=f"{url}/missing.jpg")
    fate[uid_of(60)] = "failed_to_download"
    add(61, b"this is not an image" * 10)
    fate[uid_of(61)] = "failed_to_resize"
    add(62, None, sha256="0" * 64)  # DataComp never checks it, nor do we by default
    fate[uid_of(62)] = "trained"
    add(63, None, text="")
    add(64, None, text=None)  # img2dataset writes both as an empty .txt
    fate[uid_of(63)] = fate[uid_of(64)] = "empty_caption"
    add(65, encode_image(_texture((8, 8), 3)))  # img2dataset keeps any size; our loader's minimum is 16 px here
    fate[uid_of(65)] = "too_small"
    add(66, encode_image(_texture((64, 48), 4), "GIF"), "gif")  # OpenCV decodes no GIF
    fate[uid_of(66)] = "failed_to_resize"
    whole = encode_image(_texture((120, 90), 5))
    add(67, whole[: len(whole) * 2 // 3])  # OpenCV decodes a cut JPEG (the rest grey); img2dataset keeps it
    fate[uid_of(67)] = "trained"
    # Servers that opt out (img2dataset refuses them), and lines that are no opt-out for it.
    for i, tag in enumerate(("noai", "noimageai", "NoIndex, nofollow", "otherbot: noai", "noarchive")):
        add(70 + i, None)
        headers[f"/{uid_of(70 + i)}.jpg"] = {"X-Robots-Tag": tag}
        fate[uid_of(70 + i)] = "failed_to_download" if i < 3 else "trained"
    for i in (5, 6):  # under the CLIP threshold of the filtered runs
        rows[i]["clip_b32_similarity_score"] = THRESHOLD / 2
    metadata = root / "metadata" / "part-00000.parquet"
    metadata.parent.mkdir()
    write_rows(rows, metadata)
    return metadata, fate


@pytest.fixture(scope="module")
def downloaded(img2dataset_python, tmp_path_factory) -> tuple[Path, Path, dict]:
    """img2dataset 1.40.0's downloads of the planted metadata: (metadata, output folder, fate by uid); the images
    stay served for the module's tests (the hf source downloads them again)."""
    root = tmp_path_factory.mktemp("datacomp")
    headers: dict = {}
    url, stop = serve_directory(root / "images", headers=headers)
    try:
        metadata, fate = _plant(root, url, headers)
        out = root / "out"
        run = subprocess.run([img2dataset_python, SUPPORT / "img2dataset_run.py", metadata.parent, out],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-4000:]
        yield metadata, out, fate
    finally:
        stop()


def _uids(shards: Path) -> dict[str, dict]:
    """img2dataset's own record of each row (its per-shard parquet): status by uid."""
    return {row["uid"]: row for path in shards.glob("*.parquet") for row in pq.read_table(path).to_pylist()}


def _subset_file(path: Path, uids: list[str]) -> Path:
    """A subset file as DataComp's filtering track writes it (what its resharder.py reads): the uids' high and low
    64 bits, np.dtype("u8,u8"), sorted."""
    np.save(path, np.sort(np.array([divmod(int(uid, 16), 1 << 64) for uid in uids], np.dtype("u8,u8"))))
    return path


# What the hf source, which downloads and decodes the images itself, calls the rows whose fate differs from the
# shards': img2dataset's failures, the cut JPEG it keeps (OpenCV fills the rest grey; we skip it), a null caption.
HF_REASONS = {uid_of(60): "http_error", uid_of(61): "corrupt", uid_of(66): "unsupported_format",
              uid_of(67): "truncated", uid_of(64): "missing_caption", **{uid_of(70 + i): "opted_out" for i in range(3)}}


def _fit(demo_dir: Path, run: Path, *args) -> dict:
    """One epoch of the demo model over ``args``' data; its data_yield.json."""
    result = fit(demo_dir, "--trainer.default_root_dir", run, "--trainer.logger.init_args.save_dir", run,
                 "--trainer.max_steps", "-1", "--trainer.max_epochs", "1", "--checkpoint.every_n_train_steps", "0",
                 "--trainer.limit_val_batches", "0", "--data.val_data", "null", "--data.batch_size", "4", *args,
                 timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    (summary,) = run.glob("logs/version_*/data_yield.json")
    return json.loads(summary.read_text())


def _assert_trained(run: Path, figures: dict, outcome: dict[str, str]) -> None:
    """Provenance holds exactly the uids whose outcome is "trained"; the yield counts every other by its reason."""
    final = run / "checkpoints/final"
    assert sorted(key for _, _, key in provenance(final)) == sorted(u for u, o in outcome.items() if o == "trained")
    assert key_kinds(final) == {"uid"}
    assert figures["skipped"] == dict(Counter(o for o in outcome.values() if o != "trained"))
    assert figures["records"] == len(outcome) and figures["trained"] == list(outcome.values()).count("trained")


def test_both_sources_train_the_pool_datacomps_tools_select(downloaded, demo_dir, tmp_path):
    """DataComp's downloader (opt-outs refused), a subset file as its resharder applies it, then a CLIP threshold
    and the metadata's sha256: the shards and the hf source train exactly that selection, less the documented
    differences, with each exclusion counted by its reason."""
    metadata, out, fate = downloaded
    shards = out / "datacomp"
    ((stats_file,),) = [list(shards.glob("*_stats.json"))]
    stats = json.loads(stats_file.read_text())
    record = _uids(shards)
    assert {uid: row["status"] for uid, row in record.items() if row["status"] != "success"} == {
        uid: reason for uid, reason in fate.items() if reason.startswith("failed")}
    assert {uid_of(70 + i) for i in range(3)} <= {u for u, r in record.items() if "X-Robots-Tag" in (r["error_message"]
                                                                                                       or "")}
    written = sorted(uid for uid, row in record.items() if row["status"] == "success")
    assert stats["count"] == len(fate) and stats["successes"] == len(written)

    rows = {row["uid"]: row for row in pq.read_table(metadata).to_pylist()}
    subset = _subset_file(tmp_path / "subset.npy", [uid for uid in rows if uid not in OUT_OF_SUBSET])
    filters = ["--data.subset_file", subset, "--data.clip_score_threshold", str(THRESHOLD),
               "--data.verify_sha256", "true"]

    def selection(uid: str, sha256: str | None) -> str | None:
        """Why the resharder's subset or the metadata's filters leave ``uid`` out (its image's hash ``sha256``)."""
        if uid in OUT_OF_SUBSET:
            return "not_in_subset"
        if rows[uid]["clip_b32_similarity_score"] < THRESHOLD:
            return "low_clip_score"
        return "hash_mismatch" if sha256 != rows[uid]["sha256"] else None

    # Shards: the samples img2dataset wrote, its own sha256 of each download against the metadata's.
    outcome = {uid: selection(uid, record[uid]["sha256"]) or fate[uid] for uid in written}
    figures = _fit(demo_dir, tmp_path / "shards", "--data.train_data", shards, "--data.metadata", metadata, *filters)
    _assert_trained(tmp_path / "shards", figures, outcome)
    assert figures["records"] == stats["successes"], "every sample img2dataset wrote was read"
    assert set(figures["skipped"]) == {"not_in_subset", "low_clip_score", "hash_mismatch", "empty_caption",
                                       "too_small"}

    # Parquet rows whose images the loader downloads: the same selection; img2dataset's failures under our names.
    images = metadata.parents[1] / "images"
    outcome = {}
    for uid, row in rows.items():
        served = images / row["url"].rsplit("/", 1)[1]
        sha256 = hashlib.sha256(served.read_bytes()).hexdigest() if served.exists() else None
        pool = selection(uid, rows[uid]["sha256"])  # the subset and the CLIP score come before any download
        outcome[uid] = (pool if pool in ("not_in_subset", "low_clip_score") else None) or HF_REASONS.get(uid) or (
            selection(uid, sha256) or fate[uid])
    figures = _fit(demo_dir, tmp_path / "hf", "--data.source", "hf", "--data.train_data", metadata, *filters)
    _assert_trained(tmp_path / "hf", figures, outcome)
    shards_trained = {u for u in written if selection(u, record[u]["sha256"]) is None and fate[u] == "trained"}
    assert {u for u, o in outcome.items() if o == "trained"} == shards_trained - {uid_of(67)}, "but the cut JPEG"


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_our_face_blur_covers_datacomps_and_leaves_no_more_detail(downloaded):
    metadata, out, fate = downloaded
    boxes = {row["uid"]: row["face_bboxes"] for row in pq.read_table(metadata).to_pylist() if row["face_bboxes"]}
    assert len(boxes) == len(FACES)
    # On img2dataset's own resize, losslessly: our blur_faces beside its blurrer. datacomp_resize gives the same
    # pixels as that resize (two of the images are shrunk, one is kept).
    for uid, faces in boxes.items():
        resized = Image.open(out / "reference" / f"{uid}-resized.png").convert("RGB")
        original = Image.open(metadata.parents[1] / "images" / f"{uid}.jpg").convert("RGB")
        assert np.array_equal(np.asarray(datacomp_resize(original)), np.asarray(resized))
        theirs = _rgb(out / "reference" / f"{uid}-blurred.png")
        figures = blur_figures(np.asarray(resized), theirs, np.asarray(blur_faces(resized, faces)), faces)
        print(json.dumps({"uid": uid, "size": resized.size, **figures}))
        assert figures["covered"] >= 0.99, figures
        for mine, datacomp in zip(figures["contrast_left"]["ours"], figures["contrast_left"]["theirs"]):
            assert mine <= datacomp + 0.01, figures
    # Through the loader: shards made without img2dataset's blur, blurred by ours from each .json's face_bboxes,
    # keep no more detail in any box than DataComp's shards.
    unblurred = {item["key"]: np.asarray(item["image"])
                 for item in WebDatasetSource(str(out / "unblurred"), blur_faces=False, min_image_size=0)}
    ours = {item["key"]: np.asarray(item["image"])
            for item in WebDatasetSource(str(out / "unblurred"), blur_faces=True, min_image_size=0)}
    datacomp = {item["key"]: np.asarray(item["image"])
                for item in WebDatasetSource(str(out / "datacomp"), blur_faces=False, min_image_size=0)}
    for uid, faces in boxes.items():
        figures = blur_figures(unblurred[uid], datacomp[uid], ours[uid], faces)
        print(json.dumps({"uid": uid, "through": "loader", **figures}))
        for mine, theirs in zip(figures["contrast_left"]["ours"], figures["contrast_left"]["theirs"]):
            assert mine <= theirs + 0.01, figures
    assert all(np.array_equal(ours[uid], unblurred[uid]) for uid in ours if uid not in boxes), "no face: untouched"
