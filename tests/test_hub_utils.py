"""theworld.hub and theworld.hub_utils against the local Hub (tests/hub_server.py) through the real client."""


import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, constants
from support.accounts import ALICE, ALICE_READ, BOB

from theworld.hub import (
    HubConfig,
    HubError,
    download_files,
    download_resume_checkpoint,
    parse_hf_ref,
    preflight,
    redact,
    resolve_token,
    validate_repo_id,
)
from theworld.hub_utils import generate_model_card


def token(value):
    return resolve_token(config_token=value)


def config(repo_id="alice/theworld", **kwargs):
    return HubConfig(push_to_hub=True, hub_model_id=repo_id, **kwargs)


# ------------------------------------------------------------------------------------------ tokens
def test_token_sources_in_order_and_never_in_repr(monkeypatch, tmp_path):
    login_file = tmp_path / "login-token"
    login_file.write_text("hf_from_login\n")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(login_file))
    assert resolve_token().source == "the token saved by `hf auth login`"
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert resolve_token().value == "hf_from_env" and "HF_TOKEN" in resolve_token().source
    assert resolve_token(config_token="hf_from_yaml").source == "hub.hf_token"
    chosen = resolve_token(cli_token="hf_from_cli", config_token="hf_from_yaml")
    assert (chosen.value, chosen.source) == ("hf_from_cli", "--hf_token")
    assert "hf_from_cli" not in repr(chosen) and "hf_from_cli" not in str(chosen)
    monkeypatch.delenv("HF_TOKEN")
    login_file.unlink()
    assert resolve_token() is None


def test_redact_nulls_token_values_at_any_depth():
    config = {"hf_token": "x", "hub": {"hf_token": "y", "hub_model_id": "a/b"}, "data": {"max_caption_tokens": 32},
              "trainer": {"callbacks": [{"init_args": {"api_key": "z", "n": 1}}]}}
    assert redact(config) == {"hf_token": None, "hub": {"hf_token": None, "hub_model_id": "a/b"},
                              "data": {"max_caption_tokens": 32},
                              "trainer": {"callbacks": [{"init_args": {"api_key": None, "n": 1}}]}}


def test_redact_nulls_credentials_of_a_parsed_config_too():
    from jsonargparse import Namespace

    config = Namespace(hf_token="x", hub=Namespace(hf_token="y", hub_model_id="a/b"),
                       trainer=Namespace(callbacks=[Namespace(class_path="C", init_args=Namespace(hf_token="z", n=1))]))
    clean = redact(config)
    assert clean.hf_token is None and clean.hub.hf_token is None and clean.hub.hub_model_id == "a/b"
    assert clean.trainer.callbacks[0].init_args == Namespace(hf_token=None, n=1)
    assert config.trainer.callbacks[0].init_args.hf_token == "z", "the run itself keeps it"


# ---------------------------------------------------------------------------------- ids and refs
def test_parse_hf_ref():
    assert parse_hf_ref("hf://alice/theworld") == ("alice/theworld", None, None)
    assert parse_hf_ref("hf://alice/theworld@v1.0") == ("alice/theworld", "v1.0", None)
    assert parse_hf_ref("hf://alice/theworld/checkpoint-4") == ("alice/theworld", None, "checkpoint-4")
    assert parse_hf_ref("hf://alice/theworld@main/sub/folder/") == ("alice/theworld", "main", "sub/folder")
    assert parse_hf_ref("hf://alice/theworld@refs%2Fpr%2F1") == ("alice/theworld", "refs/pr/1", None)
    for bad in ("hf://alice", "alice/theworld", "hf://ali ce/x"):
        with pytest.raises(HubError, match="hf://|username/repo-name"):
            parse_hf_ref(bad)


@pytest.mark.parametrize("repo_id", ["theworld", "alice/the/world", "alice/the world", "alice/--x", None])
def test_malformed_hub_model_id_names_the_field_and_the_format(repo_id):
    with pytest.raises(HubError) as err:
        validate_repo_id(repo_id)
    assert "hub.hub_model_id" in str(err.value) and "username/repo-name" in str(err.value)


# ------------------------------------------------------------------------------------------ preflight
def test_preflight_creates_the_repo_private_as_configured(hub):
    api = preflight(config(hub_private_repo=True), token(ALICE), endpoint=hub.url)
    assert hub.is_private("alice/theworld")
    assert api.whoami()["name"] == "alice"
    preflight(config(hub_private_repo=True), token(ALICE), endpoint=hub.url)  # exists: fine


@pytest.mark.parametrize(
    ("repo_id", "secret", "expected"),
    [
        ("alice/theworld", "hf_revoked_or_wrong", "Authentication failed: the Hugging Face token from hub.hf_token is "
                                                  "invalid or expired"),
        ("alice/theworld", ALICE_READ, "read-only"),
        ("bob/theworld", ALICE, "belongs to 'alice', who cannot write to the 'bob' namespace"),
        ("theworld", ALICE, "hub.hub_model_id='theworld' is not a valid Hub repository id"),
        ("alice/theworld", None, "no Hugging Face token was found"),
    ],
)
def test_preflight_refuses_with_a_fix_in_the_message(hub, repo_id, secret, expected):
    with pytest.raises(HubError) as err:
        preflight(config(repo_id), token(secret), endpoint=hub.url)
    assert expected in str(err.value)
    assert any(fix in str(err.value) for fix in ("settings/tokens", "username/repo-name", "Use `alice/"))
    assert secret is None or secret not in str(err.value)
    asked = [(method, url) for method, url, _ in hub.request_log]
    assert len(asked) == len(set(asked)), f"a refusal is final, not retried: {asked}"
    assert ("model", "alice/theworld") not in hub._repos  # nothing was created


def test_fine_grained_token_needs_repo_write_on_the_namespace():
    from theworld.hub.preflight import _check_write_access

    scope = {"entity": {"type": "user", "name": "alice"}, "permissions": ["repo.content.read"]}
    me = {"name": "alice", "orgs": [{"name": "lab"}],
          "auth": {"accessToken": {"role": "fineGrained", "fineGrained": {"scoped": [scope]}}}}
    with pytest.raises(HubError, match="no `repo.write` permission for 'alice'"):
        _check_write_access(me, "alice/theworld", token(ALICE), "http://hub")
    _check_write_access(me, "lab/theworld", token(ALICE), "http://hub")  # no verdict for `lab`: the commit decides
    scope["permissions"].append("repo.write")
    _check_write_access(me, "alice/theworld", token(ALICE), "http://hub")


def test_preflight_refuses_an_existing_public_repo_when_private_is_asked(hub):
    hub.create_repo("alice/theworld", private=False)
    with pytest.raises(HubError, match="hub_private_repo is true but .* is public"):
        preflight(config(hub_private_repo=True), token(ALICE), endpoint=hub.url)


def test_preflight_against_a_down_hub_says_unreachable(hub):
    hub.down()
    from theworld.hub import HubUnreachableError

    with pytest.raises(HubUnreachableError, match="did not answer"):
        preflight(config(), token(ALICE), endpoint=hub.url, retries=1, wait_s=0.01)


def test_preflight_against_a_failing_hub_says_what_it_answered(hub):
    """A Hub answering HTTP 500 is there and failing: the message says so, not that it did not answer."""
    from hub_server import Faults

    from theworld.hub import HubUnreachableError

    hub.faults = Faults(error_rate=1.0, error_status=500)
    with pytest.raises(HubUnreachableError, match="answered HTTP 500") as raised:
        preflight(config(), token(ALICE), endpoint=hub.url, retries=1, wait_s=0.01)
    assert "did not answer" not in str(raised.value)


# ------------------------------------------------------------------------------------------ downloads
def seed_repo(hub, repo_id, files, private=False):
    hub.create_repo(repo_id, private=private)
    HfApi(endpoint=hub.url, token=ALICE).create_commit(
        repo_id, [CommitOperationAdd(path, data) for path, data in files.items()], commit_message="seed")


def test_download_files_from_repo_ids_and_hf_refs_incl_private(hub):
    seed_repo(hub, "alice/private", {"model.safetensors": b"root", "config.json": b"{}", "final/model.safetensors":
                                     b"final"}, private=True)
    got = download_files("alice/private", ["model.safetensors"], token=ALICE, endpoint=hub.url)
    assert got["model.safetensors"].read_bytes() == b"root"
    got = download_files("hf://alice/private@main/final", ["model.safetensors"], token=ALICE, endpoint=hub.url)
    assert got["model.safetensors"].read_bytes() == b"final"
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a Hub repo"):
        download_files("alice/private", ["model.safetensors"], token=BOB, endpoint=hub.url)
    with pytest.raises(HubError, match="Repository not found"):
        download_files("hf://alice/private", ["model.safetensors"], token=BOB, endpoint=hub.url)
    with pytest.raises(FileNotFoundError, match="lacks one of"):
        download_files("hf://alice/private", ["nope.json"], token=ALICE, endpoint=hub.url)
    with pytest.raises(ValueError, match="tensors and JSON only"):
        download_files("alice/private", ["training_state.pt"], token=ALICE, endpoint=hub.url)


def test_download_resume_checkpoint_prefers_the_resumable_folder(hub):
    state = {f"last-checkpoint/{n}": n.encode() for n in ("model.safetensors", "config.json", "training_state.pt")}
    seed_repo(hub, "alice/ckpt", {"model.safetensors": b"root", "config.json": b"{}", **state,
                                  "checkpoint-2/model.safetensors": b"2", "checkpoint-2/config.json": b"{}",
                                  "checkpoint-2/training_state.pt": b"s2"})
    got = download_resume_checkpoint("hf://alice/ckpt", token(ALICE), endpoint=hub.url)
    assert got.resumable and got.path.name == "last-checkpoint"
    assert sorted(p.name for p in got.path.iterdir()) == ["config.json", "model.safetensors", "training_state.pt"]
    got = download_resume_checkpoint("hf://alice/ckpt/checkpoint-2", token(ALICE), endpoint=hub.url)
    assert got.resumable and (got.path / "training_state.pt").read_bytes() == b"s2"

    seed_repo(hub, "alice/weights-only", {"model.safetensors": b"root", "config.json": b"{}"})
    got = download_resume_checkpoint("hf://alice/weights-only", token(ALICE), endpoint=hub.url)
    assert not got.resumable and (got.path / "model.safetensors").read_bytes() == b"root"

    seed_repo(hub, "alice/empty", {"notes.txt": b"x"})
    with pytest.raises(HubError, match="holds no TheWorld checkpoint"):
        download_resume_checkpoint("hf://alice/empty", token(ALICE), endpoint=hub.url)


# ------------------------------------------------------------------------------------------ model card
def test_model_card_metadata_and_sections(tmp_path):
    card = generate_model_card(
        gemma_model_name="google/gemma-3-4b-it",
        cosmos_model_name="nvidia/Cosmos-Predict2-2B-Video2World",
        dataset_name="mlfoundations/datacomp_small",
        num_samples=1_000_000,
        trainable_params=50_000,
        total_params=6_000_000_000,
        learning_rate=1e-4,
        batch_size=16,
        num_epochs=3,
        hub_model_id="alice/theworld",
        global_step=62_500,
        freeze_gemma_language=False,
        precision="bf16-mixed",
    )
    meta = ModelCard(card).data.to_dict()
    assert meta["base_model"] == ["google/gemma-3-4b-it", "nvidia/Cosmos-Predict2-2B-Video2World"]
    assert meta["datasets"] == ["mlfoundations/datacomp_small"]
    assert {"library_name", "license", "pipeline_tag", "tags"} <= meta.keys()
    for text in ("| learning rate | 0.0001 |", "| effective batch size | 16 |", "| epochs | 3 |",
                 "| optimizer steps | 62,500 |", "| samples seen | 1,000,000 |",
                 "| Gemma 3 language model | **trainable** |", "| Cosmos VAE encoder | frozen |",
                 "50,000 (50.0K) of 6,000,000,000 (6.0B)",
                 "| precision | bf16-mixed |",
                 'hf_hub_download(repo_id="alice/theworld", filename="model.safetensors")',
                 "load_state_dict(load_file(checkpoint_path), strict=False)",
                 'TheWorld.from_pretrained("alice/theworld")', "freeze_gemma_language=False",
                 "Gemma 3 Technical Report", "Cosmos World Foundation Model Platform", "DataComp"):
        assert text in card, text
    # Positional arguments work too, and local model folders (the demo's) stay out of the metadata.
    (tmp_path / "gemma").mkdir()
    local = generate_model_card(str(tmp_path / "gemma"), "nvidia/cosmos", "local shards", 10, 1, 2, 0.1, 1, 1)
    assert yaml.safe_load(local.split("---")[1])["base_model"] == ["nvidia/cosmos"]
    assert "your-username/theworld-model" in local
