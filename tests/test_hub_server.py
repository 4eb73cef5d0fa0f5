"""Drive the local Hub (tests/hub_server.py) with the real huggingface_hub client over a socket."""

import importlib
import os
import time

import pytest
from hub_server import Faults
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session
from support.accounts import ALICE, ALICE_READ, BOB

# httpx (huggingface_hub 1.x) or httpx2 (2.x): whichever the client's session is built on.
http_lib = importlib.import_module(type(get_session()).__module__.split(".")[0])


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.url, token=ALICE)


def download(hub, tmp_path, repo_id, filename, token=ALICE, **kwargs):
    path = hf_hub_download(repo_id, filename, endpoint=hub.url, token=token, cache_dir=tmp_path / "cache", **kwargs)
    with open(path, "rb") as f:
        return f.read()


def write_tree(root, files):
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_whoami_good_and_bad_token(hub, api):
    me = api.whoami()
    assert me["name"] == "alice"
    assert me["auth"]["accessToken"]["role"] == "write"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token="hf_nope").whoami()
    assert err.value.response.status_code == 401


def test_private_repo_is_invisible_to_others(hub, api, tmp_path):
    api.create_repo("alice/secret", private=True)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="f.txt", repo_id="alice/secret")
    assert hub.is_private("alice/secret")
    assert api.repo_info("alice/secret").private is True

    for token in (BOB, False):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=hub.url, token=token).repo_info("alice/secret")
        with pytest.raises(RepositoryNotFoundError):
            download(hub, tmp_path, "alice/secret", "f.txt", token=token)
    # Writes by strangers look like a missing repo too, not like a permission problem.
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=BOB).upload_file(path_or_fileobj=b"y", path_in_repo="g", repo_id="alice/secret")
    assert hub.files("alice/secret") == {"f.txt": b"x"}


def test_write_permissions_and_repo_creation(hub, api):
    api.create_repo("alice/public")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("alice/public")
    assert err.value.response.status_code == 409
    api.create_repo("alice/public", exist_ok=True)

    for token in (BOB, ALICE_READ, False):
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=hub.url, token=token).upload_file(
                path_or_fileobj=b"y", path_in_repo="g", repo_id="alice/public"
            )
        assert err.value.response.status_code == 403
        assert "rights to write" in str(err.value)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token=BOB).create_repo("alice/other")
    assert err.value.response.status_code == 403
    assert hub.files("alice/public") == {}

    api.delete_repo("alice/public")
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("alice/public")
    api.delete_repo("alice/public", missing_ok=True)


def test_upload_folder_with_lfs_then_download(hub, api, tmp_path):
    content = {
        "model.safetensors": os.urandom(11 * 1024 * 1024),  # above the 10 MiB threshold -> LFS
        "config.json": b'{"hidden": 8}',
        "sub/notes.txt": b"hello",
        "README.md": b"---\nlicense: mit\n---\n# card\n",  # triggers the client's YAML validation call
    }
    api.create_repo("alice/model")
    info = api.upload_folder(repo_id="alice/model", folder_path=write_tree(tmp_path / "src", content))

    assert hub.files("alice/model") == content
    assert [c["oid"] for c in hub.commits("alice/model")][-1] == info.oid
    assert sorted(hub.commits("alice/model")[-1]["files_added"]) == sorted(content)
    puts = [entry for entry in hub.request_log if entry[0] == "PUT"]
    assert len(puts) == 1 and puts[0][2] == 200  # only the big file went through LFS
    assert sorted(api.list_repo_files("alice/model")) == sorted(content)

    for name, data in content.items():
        assert download(hub, tmp_path, "alice/model", name) == data
    snapshot = snapshot_download("alice/model", endpoint=hub.url, token=ALICE, cache_dir=tmp_path / "snap")
    for name, data in content.items():
        with open(os.path.join(snapshot, name), "rb") as f:
            assert f.read() == data


def test_dataset_repo_roundtrip(hub, api, tmp_path):
    api.create_repo("alice/data", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv", repo_id="alice/data", repo_type="dataset")
    assert hub.files("alice/data", repo_type="dataset") == {"train.csv": b"a,b\n1,2\n"}
    assert download(hub, tmp_path, "alice/data", "train.csv", repo_type="dataset") == b"a,b\n1,2\n"


def test_stale_parent_commit_is_rejected(hub, api):
    api.create_repo("alice/m")
    base = api.repo_info("alice/m").sha
    api.upload_file(path_or_fileobj=b"1", path_in_repo="a.txt", repo_id="alice/m")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(
            "alice/m",
            [CommitOperationAdd("b.txt", b"2")],
            commit_message="late",
            parent_commit=base,
        )
    assert err.value.response.status_code == 412
    assert hub.files("alice/m") == {"a.txt": b"1"}


def test_commit_with_deletes_and_adds_is_atomic(hub, api):
    api.create_repo("alice/m")
    api.create_commit(
        "alice/m",
        [CommitOperationAdd(p, p.encode()) for p in ("dir/1.txt", "dir/2.txt", "b.txt", "keep.txt")],
        commit_message="seed",
    )
    api.create_commit(
        "alice/m",
        [
            CommitOperationDelete("dir/"),
            CommitOperationDelete("b.txt"),
            CommitOperationAdd("c.txt", b"new"),
            CommitOperationAdd("keep.txt", b"changed"),
        ],
        commit_message="reshape",
    )
    assert hub.files("alice/m") == {"c.txt": b"new", "keep.txt": b"changed"}
    last = hub.commits("alice/m")[-1]
    assert sorted(last["files_deleted"]) == ["b.txt", "dir/1.txt", "dir/2.txt"]
    assert sorted(last["files_added"]) == ["c.txt", "keep.txt"]

    # One bad operation fails the whole commit: the add before it is not applied either.
    n_commits = len(hub.commits("alice/m"))
    with pytest.raises(RemoteEntryNotFoundError):
        api.create_commit(
            "alice/m",
            [CommitOperationAdd("d.txt", b"d"), CommitOperationDelete("missing.txt")],
            commit_message="broken",
        )
    assert hub.files("alice/m") == {"c.txt": b"new", "keep.txt": b"changed"}
    assert len(hub.commits("alice/m")) == n_commits


def test_tags_and_revisions(hub, api, tmp_path):
    api.create_repo("alice/m")
    v1 = api.upload_file(path_or_fileobj=b"v1", path_in_repo="w.txt", repo_id="alice/m").oid
    api.create_tag("alice/m", tag="v1")
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="w.txt", repo_id="alice/m")

    assert download(hub, tmp_path, "alice/m", "w.txt", revision="v1") == b"v1"
    assert download(hub, tmp_path, "alice/m", "w.txt", revision=v1) == b"v1"
    assert download(hub, tmp_path, "alice/m", "w.txt") == b"v2"
    assert hub.files("alice/m", revision="v1") == {"w.txt": b"v1"}
    refs = api.list_repo_refs("alice/m")
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", v1)]
    assert [b.name for b in refs.branches] == ["main"]
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag("alice/m", tag="v1")
    assert err.value.response.status_code == 409
    api.create_tag("alice/m", tag="v1", exist_ok=True)


def test_download_errors_map_to_client_exceptions(hub, api, tmp_path):
    api.create_repo("alice/m")
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/m")
    with pytest.raises(RemoteEntryNotFoundError):
        download(hub, tmp_path, "alice/m", "nope.txt")
    with pytest.raises(RevisionNotFoundError):
        download(hub, tmp_path, "alice/m", "x.txt", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        download(hub, tmp_path, "alice/missing", "x.txt")


def test_revoked_token_gets_401(hub, api):
    api.create_repo("alice/m")
    hub.revoke(ALICE)
    for call in (api.whoami, lambda: api.repo_info("alice/m")):
        with pytest.raises(HfHubHTTPError) as err:
            call()
        assert err.value.response.status_code == 401


def test_gated_repo_blocks_downloads_for_others(hub, api, tmp_path):
    api.create_repo("alice/gated")
    api.upload_file(path_or_fileobj=b"g", path_in_repo="g.txt", repo_id="alice/gated")
    hub.make_gated("alice/gated")
    for token in (BOB, False):
        with pytest.raises(GatedRepoError):
            download(hub, tmp_path, "alice/gated", "g.txt", token=token)
    assert download(hub, tmp_path, "alice/gated", "g.txt") == b"g"  # the owner keeps access


def test_upload_survives_random_5xx(hub, api, tmp_path, fast_client_backoff):
    content = {"big.bin": os.urandom(10 * 1024 * 1024 + 1), "a.json": b"{}", "b/c.txt": b"c"}
    api.create_repo("alice/flaky")
    hub.faults = Faults(error_rate=0.3, paths=r"/preupload/|\.git/info/lfs|/lfs-upload/|/commit/", seed=3)
    folder = write_tree(tmp_path / "src", content)
    # The client retries 5xx on preupload and LFS calls itself, but never re-POSTs a commit: retry that here.
    for _attempt in range(10):
        try:
            api.upload_folder(repo_id="alice/flaky", folder_path=folder)
            break
        except HfHubHTTPError as err:
            assert err.response.status_code == 503
    else:
        pytest.fail("upload never succeeded")
    hub.faults = Faults()

    assert hub.files("alice/flaky") == content
    assert [c["message"] for c in hub.commits("alice/flaky")] == [
        "initial commit",
        "Upload folder using huggingface_hub",
    ]
    assert any(status == 503 for _, _, status in hub.request_log)


def test_commit_applied_but_answered_500_is_not_duplicated_on_retry(hub, api):
    api.create_repo("alice/m")

    def ops():  # fresh operations each time: the client refuses to reuse committed ones
        return [CommitOperationAdd("a.txt", b"text"), CommitOperationAdd("w.bin", b"\0binary")]

    hub.faults.commit_500_after_apply = True
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit("alice/m", ops(), commit_message="save")
    assert err.value.response.status_code == 500
    assert len(hub.commits("alice/m")) == 2  # it did land

    # The retry sees both files unchanged on the Hub (preupload oids) and makes no second commit.
    info = api.create_commit("alice/m", ops(), commit_message="save")
    assert len(hub.commits("alice/m")) == 2
    assert info.oid == hub.commits("alice/m")[-1]["oid"]
    assert hub.files("alice/m") == {"a.txt": b"text", "w.bin": b"\0binary"}


def test_dropped_connection_raises_a_transport_error(hub, api):
    hub.faults.drop_rate = 1.0
    with pytest.raises(http_lib.TransportError):
        api.whoami()
    assert hub.request_log[-1] == ("GET", "/api/whoami-v2", 0)
    hub.faults.drop_rate = 0.0
    assert api.whoami()["name"] == "alice"


def test_down_and_up_keep_state_and_port(hub, api):
    api.create_repo("alice/m")
    url = hub.url
    hub.down()
    with pytest.raises(http_lib.ConnectError):
        api.whoami()
    hub.up()
    assert hub.url == url
    assert api.repo_info("alice/m").sha == hub.commits("alice/m")[-1]["oid"]


def test_latency_and_bandwidth_slow_requests_down(hub, api, tmp_path):
    api.create_repo("alice/m")
    api.upload_file(path_or_fileobj=b"z" * 400_000, path_in_repo="z.txt", repo_id="alice/m")
    hub.faults = Faults(latency_s=0.2, paths=r"whoami")
    start = time.monotonic()
    api.whoami()
    assert time.monotonic() - start >= 0.2

    hub.faults = Faults(bandwidth_bps=1_000_000, paths=r"/resolve/")
    start = time.monotonic()
    assert download(hub, tmp_path, "alice/m", "z.txt") == b"z" * 400_000
    assert time.monotonic() - start >= 0.35
