# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Comparing computed outputs in tests.

Two *different* objects holding bit-identical weights (a model and its copy reloaded from a safetensors file, a
pipeline and the one pulled back from the Hub) do not always compute bit-identical outputs from the same input: BLAS
and oneDNN kernels may take other code paths (vector peel loops, blockings) for tensors at other memory alignments,
and tensors read from a file are not 64-byte aligned as fresh allocations are. Measured on an AVX2 CPU: the logits of
a discriminator and of its reloaded copy differ by 7.5e-9 (magnitude 0.05); a fresh `copy.deepcopy` gives 0. Other
CPUs (AVX-512), thread counts and memory formats change the kernels again. So such comparisons use
[`assert_outputs_close`]; bitwise checks stay where the code promises them (state dicts and resumed training are exact;
the same object run twice on the same input, and same-seed reruns on freshly allocated weights, repeat the same
kernels) and say so where they are made.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator

import torch

# (rtol, atol) per compute dtype. float32: about 100x above the measured cross-instance noise (7.5e-9 at 0.05) and
# about 10x below what a spectral-norm state one power iteration stale changes (1.2e-5 at 0.05; see
# tests/models/test_discriminator_metagan.py::test_round_trip_comparison_catches_a_wrong_spectral_norm_state).
OUTPUT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}


def assert_outputs_close(
    actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype | None = None, msg: str | None = None
) -> None:
    """
    Asserts that two outputs computed by different objects from the same weights and inputs agree up to kernel
    rounding.

    Args:
        actual (`torch.Tensor`): output of one object.
        expected (`torch.Tensor`): output of the other.
        dtype (`torch.dtype`, *optional*): the dtype the outputs were *computed* in (e.g. `torch.bfloat16` for float32
            images made by a bf16 generator); defaults to `expected.dtype`.
        msg (`str`, *optional*): prefix for the failure message.
    """
    dtype = expected.dtype if dtype is None else dtype
    if dtype not in OUTPUT_TOLERANCES:
        raise ValueError(f"dtype={dtype} has no output tolerance; allowed: {sorted(map(str, OUTPUT_TOLERANCES))}")
    rtol, atol = OUTPUT_TOLERANCES[dtype]
    torch.testing.assert_close(
        actual, expected, rtol=rtol, atol=atol, msg=None if msg is None else (lambda m: f"{msg}: {m}")
    )


def missing_cjk_fonts() -> str | None:
    """
    Why the examples and tests that render kanji from system fonts cannot run here, or `None` when they can.

    They need at least two Japanese font faces (a class needs two samples). The README's test command installs no
    system packages, so on a fresh machine these skip; `.ci/run` installs fonts and runs them again.
    """
    from metagan_hub.data.fonts import APT_INSTALL_HINT, find_system_fonts, font_faces

    faces = font_faces(find_system_fonts("ja"))
    if len(faces) >= 2:
        return None
    return f"needs 2 Japanese font faces, found {len(faces)} (install with `{APT_INSTALL_HINT}`)"


def load_script(module_name: str, path: str | os.PathLike) -> types.ModuleType:
    """Import a script of `scripts/` (which is not a package) as a module under `module_name`, registered in
    `sys.modules` (dataclasses in a script look their module up there)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def one_thread_fresh_accelerate() -> Iterator[None]:
    """Run with one torch thread (tiny models, shared cores) and no process-wide Accelerate state before or after,
    so that in-process script runs, each creating its own `Accelerator`, stay independent."""
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        yield
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        torch.set_num_threads(threads)


def tiny_gan(seed: int = 0):
    """A tiny 16x16 generator / discriminator pair (latent 8, channels 16 and 8) for meta-training tests."""
    from metagan_hub import MetaGANDiscriminator, MetaGANGenerator

    torch.manual_seed(seed)
    return (
        MetaGANGenerator(latent_dim=8, sample_size=16, block_out_channels=(16, 8)),
        MetaGANDiscriminator(sample_size=16, block_out_channels=(8, 16)),
    )


def tiny_pipeline(seed: int = 0):
    """A [`MetaGANPipeline`] of [`tiny_gan`]'s pair (16x16, latent 8), progress bars off."""
    from metagan_hub import MetaGANPipeline

    generator, discriminator = tiny_gan(seed)
    pipe = MetaGANPipeline(generator=generator, discriminator=discriminator)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pretend_copy_stop(monkeypatch, step: int) -> None:
    """Make every `MetaGANPipeline.adapt` call (for this test only) run as usual and then record in the adapted
    card that `copy_stop` kept the generator after `step` steps, as a stop would."""
    from metagan_hub import MetaGANPipeline

    original = MetaGANPipeline.adapt

    def stopped(self, images, **kwargs):
        adapted = original(self, images, **kwargs)
        adapted.card_info["adaptation"]["copy_stop_step"] = step
        return adapted

    monkeypatch.setattr(MetaGANPipeline, "adapt", stopped)


def record_adapt_calls(monkeypatch) -> list[dict]:
    """Wrap `MetaGANPipeline.adapt` (for this test only) so that every call still runs and its keyword arguments are
    appended to the returned list."""
    from metagan_hub import MetaGANPipeline

    calls: list[dict] = []
    original = MetaGANPipeline.adapt

    def recording_adapt(self, images, **kwargs):
        calls.append(kwargs)
        return original(self, images, **kwargs)

    monkeypatch.setattr(MetaGANPipeline, "adapt", recording_adapt)
    return calls


def saved_pipeline_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a saved pipeline folder's generator and discriminator, keyed `component.name`."""
    from safetensors.torch import load_file

    out = {}
    for sub in ("generator", "discriminator"):
        path = os.path.join(os.fspath(folder), sub, "diffusion_pytorch_model.safetensors")
        for key, value in load_file(path).items():
            out[f"{sub}.{key}"] = value
    return out
