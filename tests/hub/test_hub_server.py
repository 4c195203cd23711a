# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Round trips through the loopback fake Hub with plain `huggingface_hub` (and one diffusers model)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import (
    HfApi,
    ModelCard,
    constants,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.numpy import load_file, save_file

from tests.hub_server import HubServer, git_blob_sha1

CARD = "---\nlicense: apache-2.0\nlibrary_name: diffusers\ntags:\n- gan\n---\n\n# A test model\n"


def make_folder(root: Path) -> Path:
    """A small model folder: JSON config, model card, a real safetensors file in a subfolder, and checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"features": 4, "_class_name": "Tiny"}))
    (root / "README.md").write_text(CARD)
    (root / "generator").mkdir()
    weights = {"weight": np.arange(64, dtype=np.float32).reshape(8, 8), "bias": np.zeros(8, dtype=np.float16)}
    save_file(weights, str(root / "generator" / "diffusion_pytorch_model.safetensors"))
    for step in (100, 200):
        (root / f"checkpoint-{step}").mkdir()
        (root / f"checkpoint-{step}" / "optimizer.bin").write_bytes(bytes(range(256)) * 4)
    return root


def folder_digest(root: Path) -> dict[str, str]:
    """`{relative path: sha256}` of every file under `root`."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def pushed_files(root: Path) -> dict[str, str]:
    """What `upload_folder(..., ignore_patterns=["checkpoint-*"])` should put in the repo."""
    return {path: digest for path, digest in folder_digest(root).items() if not path.startswith("checkpoint-")}


def test_clients_point_at_loopback_server(hub_server: HubServer) -> None:
    import huggingface_hub.hf_api
    from huggingface_hub.utils._runtime import is_xet_available

    assert hub_server.url.startswith("http://127.0.0.1:")
    assert constants.ENDPOINT == hub_server.url
    assert huggingface_hub.hf_api.api.endpoint == hub_server.url  # the instance behind `huggingface_hub.upload_folder`
    assert hf_hub_url("user/x", "a.txt").startswith(hub_server.url + "/user/x/resolve/main/")
    assert not is_xet_available()
    assert not constants.HF_HUB_OFFLINE
    assert HfApi().whoami()["name"] == hub_server.user


def test_create_repo(hub_server: HubServer, hub_repo_id: str) -> None:
    api = HfApi()
    url = api.create_repo(hub_repo_id, exist_ok=True)
    assert url.repo_id == hub_repo_id
    assert api.create_repo(hub_repo_id, exist_ok=True).repo_id == hub_repo_id
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo(hub_repo_id)
    assert excinfo.value.response.status_code == 409
    assert api.repo_exists(hub_repo_id)
    assert not api.repo_exists(hub_repo_id + "-missing")
    # Like the Hub, a new repository has one commit holding `.gitattributes`.
    assert [commit.added for commit in hub_server.commits(hub_repo_id)] == [[".gitattributes"]]


def test_upload_folder_then_snapshot_download_in_fresh_cache(
    hub_server: HubServer, hub_repo_id: str, hf_cache: Path, tmp_path: Path
) -> None:
    folder = make_folder(tmp_path / "model")
    api = HfApi()
    api.create_repo(hub_repo_id, exist_ok=True)
    info = api.upload_folder(repo_id=hub_repo_id, folder_path=folder, ignore_patterns=["checkpoint-*"])

    assert info.oid == hub_server.head(hub_repo_id)
    assert set(hub_server.commits(hub_repo_id)[-1].added) == set(pushed_files(folder))
    assert not any(path.startswith("checkpoint-") for path in hub_server.uploaded_paths(hub_repo_id))
    assert not any(path.startswith("checkpoint-") for path in hub_server.attempted_paths(hub_repo_id))
    assert hub_server.request_count("commit") == 1

    assert list(hf_cache.iterdir()) == []
    local = Path(snapshot_download(hub_repo_id))
    assert local.is_relative_to(hf_cache)
    assert local.name == info.oid
    downloaded = folder_digest(local)
    assert downloaded.pop(".gitattributes")
    assert downloaded == pushed_files(folder)
    tensors = load_file(str(local / "generator" / "diffusion_pytorch_model.safetensors"))
    np.testing.assert_array_equal(tensors["weight"], np.arange(64, dtype=np.float32).reshape(8, 8))


def test_second_upload_creates_new_revision(
    hub_server: HubServer, hub_repo_id: str, hf_cache: Path, tmp_path: Path
) -> None:
    folder = make_folder(tmp_path / "model")
    api = HfApi()
    api.create_repo(hub_repo_id)
    first = api.upload_folder(repo_id=hub_repo_id, folder_path=folder, ignore_patterns=["checkpoint-*"])
    assert hf_hub_download(hub_repo_id, "config.json") and api.model_info(hub_repo_id).sha == first.oid

    (folder / "config.json").write_text(json.dumps({"features": 8, "_class_name": "Tiny"}))
    (folder / "extra.txt").write_text("new file")
    second = api.upload_folder(repo_id=hub_repo_id, folder_path=folder, ignore_patterns=["checkpoint-*"])

    assert second.oid != first.oid
    assert api.model_info(hub_repo_id).sha == second.oid == hub_server.head(hub_repo_id)
    # The client skips files whose git blob id the preupload answer reports as unchanged.
    assert sorted(hub_server.commits(hub_repo_id)[-1].added) == ["config.json", "extra.txt"]
    assert [c.commit_id for c in api.list_repo_commits(hub_repo_id)][:2] == [second.oid, first.oid]

    # `main` moved (the cached `config.json` is refreshed); the old revision stays resolvable by sha.
    assert json.loads(Path(hf_hub_download(hub_repo_id, "config.json")).read_text())["features"] == 8
    old = Path(hf_hub_download(hub_repo_id, "config.json", revision=first.oid))
    assert json.loads(old.read_text())["features"] == 4
    assert "extra.txt" not in {s.rfilename for s in api.model_info(hub_repo_id, revision=first.oid).siblings}
    assert (Path(snapshot_download(hub_repo_id)) / "extra.txt").read_text() == "new file"


def test_model_info_lists_siblings(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "model")
    api = HfApi()
    api.create_repo(hub_repo_id)
    api.upload_folder(repo_id=hub_repo_id, folder_path=folder, ignore_patterns=["checkpoint-*"])

    info = api.model_info(hub_repo_id, files_metadata=True)
    assert info.id == hub_repo_id and info.sha == hub_server.head(hub_repo_id)
    siblings = {sibling.rfilename: sibling for sibling in info.siblings}
    assert set(siblings) == {".gitattributes", *pushed_files(folder)}
    weights = folder / "generator" / "diffusion_pytorch_model.safetensors"
    sibling = siblings["generator/diffusion_pytorch_model.safetensors"]
    assert sibling.size == weights.stat().st_size
    assert sibling.blob_id == git_blob_sha1(weights.read_bytes())
    assert sibling.lfs is None  # regular uploads only


def test_tree_listing_recursive_and_paginated(
    hub_server: HubServer, hub_repo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_server.add_commit(hub_repo_id, {"a.txt": b"a", "d/b.txt": b"b", "d/e/c.txt": b"c", "z.txt": b"z"})
    monkeypatch.setattr(hub_server, "tree_page_size", 2)
    api = HfApi()

    top = {entry.path: type(entry).__name__ for entry in api.list_repo_tree(hub_repo_id)}
    assert top == {".gitattributes": "RepoFile", "a.txt": "RepoFile", "d": "RepoFolder", "z.txt": "RepoFile"}
    assert hub_server.request_count("tree") == 2  # 4 entries, 2 per page, followed through the `Link` header

    everything = {entry.path for entry in api.list_repo_tree(hub_repo_id, recursive=True)}
    assert everything == {".gitattributes", "a.txt", "d", "d/b.txt", "d/e", "d/e/c.txt", "z.txt"}
    assert {entry.path for entry in api.list_repo_tree(hub_repo_id, "d/e")} == {"d/e/c.txt"}
    assert sorted(api.list_repo_files(hub_repo_id)) == [".gitattributes", "a.txt", "d/b.txt", "d/e/c.txt", "z.txt"]
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(hub_repo_id, "missing"))


def test_offline_reload_from_cache(
    hub_server: HubServer, hub_repo_id: str, hf_cache: Path, hub_offline, tmp_path: Path
) -> None:
    folder = make_folder(tmp_path / "model")
    HfApi().create_repo(hub_repo_id)
    HfApi().upload_folder(repo_id=hub_repo_id, folder_path=folder, ignore_patterns=["checkpoint-*"])
    online = snapshot_download(hub_repo_id)

    hub_server.clear_requests()
    hub_offline()
    assert constants.HF_HUB_OFFLINE
    assert snapshot_download(hub_repo_id) == online
    assert Path(hf_hub_download(hub_repo_id, "config.json")) == Path(online) / "config.json"
    assert hub_server.requests == []  # served from the cache, nothing reached the server

    hub_offline(False)
    local = hf_hub_download(hub_repo_id, "README.md", local_files_only=True)
    assert Path(local).read_text() == CARD
    assert hub_server.requests == []


def test_reload_from_cache_while_server_is_down(hub_server: HubServer, hub_repo_id: str, hf_cache: Path) -> None:
    hub_server.add_commit(hub_repo_id, {"config.json": b'{"a": 1}', "w.safetensors": b"\x00\x01binary"})
    online = snapshot_download(hub_repo_id)

    with hub_server.down():
        assert snapshot_download(hub_repo_id) == online  # connection refused -> falls back to the cache
        assert Path(hf_hub_download(hub_repo_id, "w.safetensors")).read_bytes() == b"\x00\x01binary"
        assert Path(hf_hub_download(hub_repo_id, "config.json", local_files_only=True)).exists()
        with pytest.raises(LocalEntryNotFoundError):
            snapshot_download(hub_repo_id + "-never-downloaded")
    assert HfApi().repo_exists(hub_repo_id)  # serves again, with its repositories


def test_failed_commit_raises_and_keeps_local_folder(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "model")
    before = folder_digest(folder)
    api = HfApi()
    api.create_repo(hub_repo_id)
    head = hub_server.head(hub_repo_id)

    hub_server.fail_next("commit", status=500, message="disk full")
    with pytest.raises(HfHubHTTPError, match="disk full") as excinfo:
        api.upload_folder(repo_id=hub_repo_id, folder_path=folder, ignore_patterns=["checkpoint-*"])
    assert excinfo.value.response.status_code == 500

    assert folder_digest(folder) == before
    assert hub_server.head(hub_repo_id) == head and len(hub_server.commits(hub_repo_id)) == 1
    [failed] = [record for record in hub_server.requests if record.endpoint == "commit"]
    assert failed.injected and failed.status == 500  # the commit endpoint is not retried by the client
    assert set(failed.paths) == set(pushed_files(folder))
    assert hub_server.pending_failures == 0

    api.upload_folder(repo_id=hub_repo_id, folder_path=folder, ignore_patterns=["checkpoint-*"])  # a retry works
    assert hub_server.head(hub_repo_id) != head


def test_failed_preupload(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "model")
    api = HfApi()
    api.create_repo(hub_repo_id)

    hub_server.fail_next("preupload", status=403, repo_id=hub_repo_id)
    with pytest.raises(HfHubHTTPError):
        api.upload_folder(repo_id=hub_repo_id, folder_path=folder)
    assert hub_server.request_count("commit") == 0

    # 5xx answers to preupload are retried by the client (after a 1 s wait), so one failure is survived.
    hub_server.fail_next("preupload", status=503)
    api.upload_folder(repo_id=hub_repo_id, folder_path=folder, ignore_patterns=["checkpoint-*"])
    assert [record.status for record in hub_server.requests if record.endpoint == "preupload"] == [403, 503, 200]


def test_missing_entries_raise_hub_errors(hub_server: HubServer, hub_repo_id: str, hf_cache: Path) -> None:
    hub_server.add_commit(hub_repo_id, {"a.txt": b"a"})
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo_id, "missing.txt")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(hub_repo_id, "a.txt", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo_id + "-missing", "a.txt")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(hub_repo_id + "-missing")


def test_model_card_push_to_hub_validates_yaml(hub_server: HubServer, hub_repo_id: str, hf_cache: Path) -> None:
    HfApi().create_repo(hub_repo_id)
    ModelCard(CARD).push_to_hub(hub_repo_id)
    assert hub_server.request_count("validate-yaml") >= 1
    assert ModelCard.load(hub_repo_id).data.tags == ["gan"]

    with pytest.raises(ValueError, match="metadata"):
        ModelCard("---\n- not\n- a mapping\n---\n# card\n").push_to_hub(hub_repo_id)
    assert len(hub_server.commits(hub_repo_id)) == 2


def test_pull_request_branch(hub_server: HubServer, hub_repo_id: str, hf_cache: Path) -> None:
    main = hub_server.add_commit(hub_repo_id, {"a.txt": b"main"})
    info = HfApi().upload_file(path_or_fileobj=b"pr", path_in_repo="a.txt", repo_id=hub_repo_id, create_pr=True)
    assert info.pr_revision == "refs/pr/1"
    assert hub_server.head(hub_repo_id) == main
    assert Path(hf_hub_download(hub_repo_id, "a.txt", revision="refs/pr/1")).read_bytes() == b"pr"
    assert Path(hf_hub_download(hub_repo_id, "a.txt")).read_bytes() == b"main"


def test_diffusers_model_push_to_hub_and_from_pretrained(
    hub_server: HubServer, hub_repo_id: str, hf_cache: Path, hub_offline
) -> None:
    torch = pytest.importorskip("torch")
    import diffusers.utils.constants
    from diffusers import ConfigMixin, ModelMixin
    from diffusers.configuration_utils import register_to_config

    assert diffusers.utils.constants.HUGGINGFACE_CO_RESOLVE_ENDPOINT == hub_server.url

    class TinyModel(ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, features: int = 4) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(features, features)

    torch.manual_seed(0)
    model = TinyModel(features=3)
    model.push_to_hub(hub_repo_id)  # diffusers creates the repo (exist_ok) and a model card
    assert {"config.json", "diffusion_pytorch_model.safetensors", "README.md"} <= hub_server.uploaded_paths(
        hub_repo_id
    )

    loaded = TinyModel.from_pretrained(hub_repo_id)  # fresh cache: downloads through the server
    torch.testing.assert_close(loaded.proj.weight, model.proj.weight)
    assert loaded.config.features == 3

    hub_server.clear_requests()
    hub_offline()
    offline = TinyModel.from_pretrained(hub_repo_id)
    torch.testing.assert_close(offline.proj.weight, model.proj.weight)
    assert hub_server.requests == []
