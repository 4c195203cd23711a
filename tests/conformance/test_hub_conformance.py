# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Publishing guarantees against the loopback Hub (tests/hub_server.py): nothing local leaves the machine, non-finite
weights are never pushed, network faults (server down, connection dropped mid-commit, a Hub that accepts and never
answers, missing credentials) end in a `HubUploadError` with advice and an intact local folder."""

from __future__ import annotations

import os
import time

import diffusers
import pytest
import torch

from metagan_hub import MetaGANPipeline
from metagan_hub.hub.network import TIMEOUT_ENV, resolve_timeout
from metagan_hub.hub.safety import NonFiniteWeightsError, find_local_data
from metagan_hub.hub.upload import HubUploadError, LocalDataLeakError, upload_folder_to_hub
from tests.conformance.common import SIZE, all_files, tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pushing_a_pipeline_adapted_from_a_local_folder_publishes_no_local_path(
    hub_server, hub_repo_id, hf_cache, tmp_path
):
    base = tmp_path / "private-runs" / "meta-checkpoint"
    tiny_pipeline().save_pretrained(base)
    pipe = MetaGANPipeline.from_pretrained(base)
    adapted = pipe.adapt(
        torch.rand(4, 1, SIZE, SIZE) * 2 - 1, num_steps=2, batch_size=2, generator=torch.Generator().manual_seed(0)
    )
    adapted.push_to_hub(hub_repo_id, save_directory=tmp_path / "staging")
    files = hub_server.files(hub_repo_id)
    assert {"model_index.json", "metagan_hub.json", "README.md", "generator/config.json"} <= set(files)
    needles = [str(tmp_path).encode(), b"private-runs/", b"_name_or_path", os.path.expanduser("~").encode() + b"/"]
    for path, data in files.items():
        for needle in needles:
            assert needle not in data, (path, needle)
    # the pipeline pulled back is the adapted one, and its card names no base model it cannot resolve
    loaded = MetaGANPipeline.from_pretrained(hub_repo_id)
    assert loaded.card_info["base_model"] is None and loaded.card_info["base_model_local_name"] == "meta-checkpoint"
    assert loaded.card_info["adaptation"]["num_steps"] == 2


def test_plain_diffusers_from_the_hub_keeps_card_info(hub_server, hub_repo_id, hf_cache):
    pipe = tiny_pipeline()
    pipe.card_info = {"training": {"algorithm": "reptile"}, "base_model": "org/base"}
    pipe.push_to_hub(hub_repo_id)
    loaded = diffusers.DiffusionPipeline.from_pretrained(hub_repo_id, trust_remote_code=True)
    assert loaded.card_info["training"] == {"algorithm": "reptile"}


@pytest.mark.parametrize(
    ("card_info", "finding"),
    [
        ({"data_notes": "shots copied from /home/alice/private/glyphs today"}, "local path '/home/alice"),
        ({"summary": "made with hf_" + "A" * 34}, "a Hub token (hf_AA...)"),
        ({"data_notes": "see C:\\\\Users\\\\bob\\\\shots"}, "local path 'C:"),
    ],
)
def test_push_refuses_local_paths_and_tokens_before_sending_anything(
    hub_server, hub_repo_id, hf_cache, tmp_path, card_info, finding
):
    pipe = tiny_pipeline()
    pipe.card_info = card_info
    with pytest.raises(LocalDataLeakError, match="Nothing was sent") as err:
        pipe.push_to_hub(hub_repo_id, save_directory=tmp_path / "out")
    assert finding in str(err.value) and "metagan_hub.json" in str(err.value)
    assert "A" * 34 not in str(err.value)  # tokens are never echoed in full
    assert hub_server.requests == [] and not hub_server.repo_exists(hub_repo_id)
    assert (tmp_path / "out" / "model_index.json").is_file()  # the local folder stays for inspection


def test_whole_absolute_path_values_are_reduced_to_their_name(hub_server, hub_repo_id, hf_cache):
    pipe = tiny_pipeline()
    pipe.card_info = {"training": {"output_dir": "/home/alice/runs/meta", "steps": 3}}
    pipe.push_to_hub(hub_repo_id)
    info = hub_server.files(hub_repo_id)["metagan_hub.json"].decode()
    assert "/home/alice" not in info and '"output_dir": "meta"' in info


def test_scanner_finds_paths_in_safetensors_headers_and_ignores_urls(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "a.safetensors", metadata={"base": "/home/bob/base-model"})
    (tmp_path / "README.md").write_text("See https://huggingface.co/home/x and http://127.0.0.1:8000/tmp/y")
    findings = find_local_data(tmp_path)
    assert findings == ["a.safetensors: local path '/home/bob/base-model'"]


def test_push_refuses_non_finite_weights(hub_server, hub_repo_id, hf_cache):
    pipe = tiny_pipeline()
    with torch.no_grad():
        pipe.generator.conv_out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteWeightsError, match=r"`conv_out\.bias` of component `generator`"):
        pipe.push_to_hub(hub_repo_id)
    with pytest.raises(NonFiniteWeightsError, match="conv_out.bias"):
        pipe.generator.push_to_hub(hub_repo_id)
    assert hub_server.requests == []


def test_server_down_is_a_hub_upload_error_with_retry_advice(hub_server, hub_repo_id, hf_cache, tmp_path):
    pipe = tiny_pipeline()
    with hub_server.down(), pytest.raises(HubUploadError, match="could not connect to the Hub") as err:
        pipe.push_to_hub(hub_repo_id, save_directory=tmp_path / "out", timeout=5)
    assert "push again" in str(err.value) and "Nothing local was changed" in str(err.value)
    assert (tmp_path / "out" / "generator" / "diffusion_pytorch_model.safetensors").is_file()


def test_connection_dropped_mid_commit(hub_server, hub_repo_id, hf_cache, tmp_path):
    pipe = tiny_pipeline()
    hub_server.drop_next("commit")
    with pytest.raises(HubUploadError, match="connection to the Hub broke") as err:
        pipe.push_to_hub(hub_repo_id, save_directory=tmp_path / "out")
    assert "RemoteProtocolError" in str(err.value) and "push again" in str(err.value)
    assert "model_index.json" not in hub_server.uploaded_paths(hub_repo_id)  # no partial commit
    assert (tmp_path / "out" / "model_index.json").is_file()
    pipe.push_to_hub(hub_repo_id, save_directory=tmp_path / "out")  # the retry the message advises works
    assert "model_index.json" in hub_server.uploaded_paths(hub_repo_id)


@pytest.mark.parametrize("endpoint", ["commit", "create"])
@pytest.mark.parametrize("how", ["argument", "environment"])
def test_stalled_hub_ends_fast_with_a_clear_error(
    hub_server, hub_repo_id, hf_cache, tmp_path, monkeypatch, endpoint, how
):
    pipe = tiny_pipeline()
    hub_server.stall_next(endpoint, max_seconds=60)
    kwargs = {"timeout": 1} if how == "argument" else {}
    if how == "environment":
        monkeypatch.setenv(TIMEOUT_ENV, "1")
    start = time.perf_counter()
    with pytest.raises(HubUploadError, match=r"did not answer within 1 s") as err:
        pipe.push_to_hub(hub_repo_id, save_directory=tmp_path / "out", **kwargs)
    assert time.perf_counter() - start < 30
    assert TIMEOUT_ENV in str(err.value) and "push again" in str(err.value)
    assert (tmp_path / "out" / "model_index.json").is_file()
    hub_server.release_stalled()


def test_stalled_hub_while_loading_a_repo_id(hub_server, hub_repo_id, hf_cache):
    tiny_pipeline().push_to_hub(hub_repo_id)
    hub_server.stall_next("info", times=3, max_seconds=60)
    start = time.perf_counter()
    with pytest.raises(OSError, match=r"did not answer within 1 s"):
        MetaGANPipeline.from_pretrained(hub_repo_id, timeout=1)
    assert time.perf_counter() - start < 30
    hub_server.release_stalled()


@pytest.mark.slow  # ~30 s: huggingface_hub backs off 23 s between its retries of a timed-out request
def test_stalled_hub_while_loading_a_model_or_lora_repo_id(hub_server, hub_repo_id, hf_cache):
    pipe = tiny_pipeline()
    pipe.generator.push_to_hub(hub_repo_id)
    hub_server.stall_next("resolve", times=10, max_seconds=60)
    start = time.perf_counter()
    with pytest.raises(OSError, match="did not answer within 1 s"):
        type(pipe.generator).from_pretrained(hub_repo_id, timeout=1)
    # huggingface_hub retries a timed-out metadata request 5 times (1+2+4+8+8 s of backoff): bounded, not instant
    assert time.perf_counter() - start < 90
    hub_server.release_stalled()
    hub_server.stall_next("info", times=10, max_seconds=60)
    start = time.perf_counter()
    with pytest.raises(OSError):
        pipe.load_lora_weights(hub_repo_id, timeout=1)
    assert time.perf_counter() - start < 30


def test_bounded_waits_nest_and_restore_the_client():
    from huggingface_hub.utils import get_session

    from metagan_hub.hub.network import bounded_hub_requests

    session = get_session()
    before = session.timeout
    with bounded_hub_requests(5):
        outer = session.__dict__["send"]
        with bounded_hub_requests(2):
            assert session.timeout.read == 2
        assert session.__dict__["send"] is outer and session.timeout.read == 5
    assert "send" not in session.__dict__ and session.timeout == before


def test_push_without_token_says_how_to_log_in(hub_server, hub_repo_id, hf_cache, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubUploadError, match=r"`hf auth login` or pass `token=`"):
        tiny_pipeline().push_to_hub(hub_repo_id)
    assert not hub_server.repo_exists(hub_repo_id)


@pytest.mark.parametrize("value", ["0", "-3", "inf", "nan", "soon"])
def test_timeout_environment_variable_is_validated(monkeypatch, value):
    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=TIMEOUT_ENV):
        resolve_timeout()


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan"), "10", True])
def test_timeout_argument_is_validated(value, tmp_path):
    with pytest.raises(ValueError, match="`timeout`"):
        upload_folder_to_hub(tmp_path, "user/x", timeout=value)
    assert all_files(tmp_path) == []
