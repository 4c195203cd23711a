"""`mixed_precision="auto"`: bf16 only where the device computes it natively, fp32 elsewhere; the choice is logged
once, an explicit bf16 without native support warns, and the adaptation record keeps the request and the result.

The capability checks are monkeypatched both ways, so every branch runs on any CPU."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch

import metagan_hub.training.gan_step as gan_step
from metagan_hub.training.gan_step import (
    MIXED_PRECISION_CHOICES,
    cpu_has_native_bf16,
    device_has_native_bf16,
    resolve_mixed_precision,
)
from tests.testing_utils import tiny_pipeline

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
LOGGER = "metagan_hub.training.gan_step"


@pytest.fixture(autouse=True)
def _fresh_log_memory(monkeypatch):
    """Each test starts as a fresh process would: no precision choice logged yet."""
    monkeypatch.setattr(gan_step, "_LOGGED_PRECISIONS", set())


@pytest.fixture
def native(monkeypatch):
    """`native(True)` / `native(False)`: pretend this CPU has (or lacks) native bf16."""

    def set_native(value: bool) -> None:
        monkeypatch.setattr(gan_step, "cpu_has_native_bf16", lambda: value)

    return set_native


def shots() -> torch.Tensor:
    return torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1  # [N, 1, 16, 16]


# ------------------------------------------------------------------------------------------- capability checks


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ({"avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}, False),  # AVX-512 alone: emulated
        ({"avx2": True, "avx512_bf16": False, "amx_bf16": False}, False),  # AVX2
        ({"avx512_f": True, "avx512_bf16": True}, True),
        ({"amx_tile": True, "amx_bf16": True}, True),
        ({"neon": True, "bf16": True}, True),  # ARM BF16
        ({"neon": True}, False),
    ],
)
def test_cpu_native_bf16_follows_torchs_capabilities(monkeypatch, capabilities, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert cpu_has_native_bf16() is expected
    assert device_has_native_bf16("cpu") is expected


@pytest.mark.parametrize(
    ("variable", "cap", "expected"),
    [
        ("ONEDNN_MAX_CPU_ISA", "AVX2", False),
        ("ONEDNN_MAX_CPU_ISA", "avx512_core", False),  # AVX-512 without its bf16 extension
        ("DNNL_MAX_CPU_ISA", "AVX2_VNNI", False),  # oneDNN's older name of the variable
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", True),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", True),
        ("ONEDNN_MAX_CPU_ISA", "ALL", True),
    ],
)
def test_onednn_isa_cap_below_bf16_means_emulated(monkeypatch, variable, cap, expected):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, "avx512_bf16": True})
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    assert cpu_has_native_bf16() is True
    monkeypatch.setenv(variable, cap)
    assert cpu_has_native_bf16() is expected
    assert resolve_mixed_precision("auto", "cpu") == ("bf16" if expected else "no")


def test_cpu_without_onednn_has_no_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert cpu_has_native_bf16() is False


def test_cuda_native_bf16_needs_hardware_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_has_native_bf16("cuda") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, s=supported: s)
        assert device_has_native_bf16("cuda:0") is supported
    assert device_has_native_bf16("meta") is False  # other devices: not native


# ------------------------------------------------------------------------------------------------- resolution


def test_auto_is_fp32_without_native_bf16_and_bf16_with_it(native, caplog):
    native(False)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert resolve_mixed_precision("auto", "cpu") == "no"
        assert resolve_mixed_precision("auto", torch.device("cpu")) == "no"
    infos = [r for r in caplog.records if r.name == LOGGER]
    assert len(infos) == 1 and infos[0].levelno == logging.INFO  # logged once
    assert "'auto' -> 'no'" in infos[0].getMessage()
    assert torch.backends.cpu.get_cpu_capability() in infos[0].getMessage()

    native(True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert resolve_mixed_precision("auto", "cpu") == "bf16"
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [logging.INFO]
    assert "'auto' -> 'bf16'" in caplog.text


def test_explicit_precisions_are_kept(native):
    for value in (False, True):
        native(value)
        assert resolve_mixed_precision("no", "cpu") == "no"
        assert resolve_mixed_precision("bf16", "cpu") == "bf16"


def test_explicit_bf16_without_native_support_warns_once_with_the_slowdown(native, caplog):
    native(False)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert resolve_mixed_precision("bf16", "cpu") == "bf16"  # still runs
        resolve_mixed_precision("bf16", "cpu")
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "emulated" in message and "10x slower" in message and "mixed_precision='auto'" in message


def test_explicit_bf16_with_native_support_does_not_warn(native, caplog):
    native(True)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert resolve_mixed_precision("bf16", "cpu") == "bf16"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("bad", ["fp8", "AUTO", "", None, 16, True])
def test_unknown_precision_is_named(bad):
    with pytest.raises(ValueError, match=r"`mixed_precision` must be one of .*'auto'.*got"):
        resolve_mixed_precision(bad, "cpu")


def test_fp16_on_cpu_is_refused_and_auto_never_picks_it(native):
    with pytest.raises(ValueError, match="fp16.*CPU"):
        resolve_mixed_precision("fp16", "cpu")
    native(True)
    assert resolve_mixed_precision("auto", "cpu") != "fp16"
    assert MIXED_PRECISION_CHOICES == ("auto", "no", "bf16", "fp16")


# ---------------------------------------------------------------------------------------------------- adapt()


@pytest.mark.parametrize(("is_native", "resolved"), [(False, "no"), (True, "bf16")])
def test_adapt_auto_records_requested_and_resolved_precision(native, is_native, resolved, caplog):
    native(is_native)
    pipe = tiny_pipeline()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        adapted = pipe.adapt(shots(), num_steps=2, mixed_precision="auto", generator=torch.Generator().manual_seed(0))
    record = adapted.card_info["adaptation"]
    assert record["requested_mixed_precision"] == "auto" and record["mixed_precision"] == resolved
    assert f"'auto' -> '{resolved}'" in caplog.text
    # "auto" resolved to a precision runs exactly as that precision asked for directly
    direct = pipe.adapt(shots(), num_steps=2, mixed_precision=resolved, generator=torch.Generator().manual_seed(0))
    assert direct.card_info["adaptation"]["requested_mixed_precision"] == resolved
    for (k, a), b in zip(adapted.generator.state_dict().items(), direct.generator.state_dict().values()):
        assert torch.equal(a, b), k  # bitwise: adapt() promises identical weights for the same seed and settings


def test_adapt_explicit_bf16_without_native_support_warns_and_runs(native, caplog):
    native(False)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        adapted = tiny_pipeline().adapt(shots(), num_steps=2, mixed_precision="bf16")
    assert "10x slower" in caplog.text
    record = adapted.card_info["adaptation"]
    assert record["requested_mixed_precision"] == "bf16" and record["mixed_precision"] == "bf16"


def test_adapt_default_stays_fp32_on_every_machine(native):
    native(True)
    record = tiny_pipeline().adapt(shots(), num_steps=1).card_info["adaptation"]
    assert record["requested_mixed_precision"] == "no" and record["mixed_precision"] == "no"


def test_adapt_rejects_unknown_precision():
    with pytest.raises(ValueError, match=r"`mixed_precision` must be one of .*got 'fp8'"):
        tiny_pipeline().adapt(shots(), num_steps=1, mixed_precision="fp8")


# ---------------------------------------------------------------------------------------------------- scripts


def _script_args(name: str, argv: list[str]):
    sys.path.insert(0, str(SCRIPTS))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module.parse_args(argv)


def test_scripts_take_auto(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert _script_args("demo_adapt", []).mixed_precision == "auto"
    assert _script_args("demo_adapt", []).pretrained_model_name_or_path == "auto"
    base = ["--pretrained_model_name_or_path", "x", "--train_data_dir", os.fspath(tmp_path)]
    assert _script_args("adapt_metagan", base).mixed_precision == "auto"
    assert _script_args("adapt_metagan", base + ["--mixed_precision", "no"]).mixed_precision == "no"
    train = _script_args("train_metagan", ["--dataset", "digits", "--mixed_precision", "auto", "--output_dir", "o"])
    assert train.mixed_precision == "auto"


@pytest.mark.parametrize("native, expected", [(True, "metagan-kanji-32"), (False, "metagan-kanji-32-small")])
def test_demo_checkpoint_auto_follows_native_bf16(monkeypatch, native, expected):
    """The demo's default checkpoint: the full-width model where bf16 is native, the half-width one elsewhere (fp32
    there); a named checkpoint is used as given."""
    _script_args("demo_adapt", [])  # imports the script
    demo_adapt = sys.modules["demo_adapt"]
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import demo_app  # the rule the demo shares with the web app

    monkeypatch.setattr(demo_app, "cpu_has_native_bf16", lambda: native)
    chosen = demo_adapt.resolve_checkpoint("auto")
    assert os.path.basename(chosen) == expected and os.path.isdir(chosen)
    assert demo_adapt.resolve_checkpoint("some/folder") == "some/folder"
