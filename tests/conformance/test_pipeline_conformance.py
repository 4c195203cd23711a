# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""`MetaGANPipeline` checked on the points diffusers' pipeline tester checks for diffusers pipelines: components,
save/load round trips (with and without variants, dtype dicts, `torch_dtype`), `to()`, output types and
`return_dict`, seeded determinism, batch consistency, progress bar config, layerwise casting, loading log lines and
plain `DiffusionPipeline` loading."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline
from metagan_hub.hub.safety import NonFiniteWeightsError
from tests.conformance.common import (
    SIZE,
    all_files,
    assert_same_state,
    generate,
    text_files,
    tiny_generator,
    tiny_pipeline,
)
from tests.testing_utils import assert_outputs_close

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conformance") / "pipe"
    pipe = tiny_pipeline()
    pipe.save_pretrained(folder)
    return pipe, folder


# ---------------------------------------------------------------- components and construction


def test_components_rebuild_an_equal_pipeline():
    pipe = tiny_pipeline()
    assert set(pipe.components) == {"generator", "discriminator", "copy_encoder"}  # the last optional, None here
    assert pipe.copy_encoder is None
    assert pipe.components["generator"] is pipe.generator
    again = MetaGANPipeline(**pipe.components)
    # the same generator object run twice on the same latents repeats the same kernels: exact
    assert torch.equal(generate(again), generate(pipe))


def test_optional_component_round_trip(tmp_path):
    pipe = tiny_pipeline(discriminator=False)
    pipe.save_pretrained(tmp_path)
    assert not (tmp_path / "discriminator").exists()
    loaded = MetaGANPipeline.from_pretrained(tmp_path)
    assert loaded.discriminator is None
    assert_outputs_close(generate(loaded), generate(pipe))


# ---------------------------------------------------------------- save / load


def test_save_load_local_round_trip(saved):
    pipe, folder = saved
    loaded = MetaGANPipeline.from_pretrained(folder)
    assert_same_state(pipe.generator, loaded.generator)
    assert_same_state(pipe.discriminator, loaded.discriminator)
    assert_outputs_close(generate(loaded, seed=3), generate(pipe, seed=3))  # two instances: up to kernel rounding


def test_variant_is_only_a_file_label(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path, variant="fp16")
    assert pipe.generator.dtype == torch.float32  # the live pipeline is untouched
    files = all_files(tmp_path)
    assert os.path.join("generator", "diffusion_pytorch_model.fp16.safetensors") in files
    assert os.path.join("generator", "diffusion_pytorch_model.safetensors") not in files
    # no cast: the fp16-labelled file holds the float32 weights, and they round-trip bit-exactly
    stored = load_file(tmp_path / "generator" / "diffusion_pytorch_model.fp16.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float32}
    loaded = MetaGANPipeline.from_pretrained(tmp_path, variant="fp16")
    assert_same_state(pipe.generator, loaded.generator)
    assert_same_state(pipe.discriminator, loaded.discriminator)


def test_cast_then_save_variant_round_trip(tmp_path):
    pipe = tiny_pipeline().to(torch.float16)
    pipe.save_pretrained(tmp_path, variant="fp16")
    loaded = MetaGANPipeline.from_pretrained(tmp_path, variant="fp16", dtype=torch.float16)
    assert loaded.generator.dtype == torch.float16
    assert_same_state(pipe.generator, loaded.generator)


def test_missing_variant_raises_value_error_naming_it(saved, caplog):
    _, folder = saved
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match=r"variant='bf16'") as err:
        MetaGANPipeline.from_pretrained(folder, variant="bf16")
    assert "diffusion_pytorch_model.bf16.safetensors" in str(err.value)
    assert "unsafe serialization" not in caplog.text


def test_variant_only_checkpoint_without_variant_says_which_variants_exist(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path, variant="bf16")
    with pytest.raises(ValueError, match=r"variant.*bf16"):
        MetaGANPipeline.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ({"generator": torch.bfloat16, "default": torch.float16}, (torch.bfloat16, torch.float16)),
        ({"discriminator": torch.bfloat16}, (torch.float32, torch.bfloat16)),
        ({"default": torch.float16}, (torch.float16, torch.float16)),
        (torch.bfloat16, (torch.bfloat16, torch.bfloat16)),
    ],
)
@pytest.mark.parametrize("loader", ["metagan", "diffusers"])
def test_dtype_dicts_as_diffusers_takes_them(saved, dtype, expected, loader):
    pipe, folder = saved
    if loader == "metagan":
        loaded = MetaGANPipeline.from_pretrained(folder, dtype=dtype)
    else:
        loaded = diffusers.DiffusionPipeline.from_pretrained(folder, dtype=dtype, trust_remote_code=True)
    assert (loaded.generator.dtype, loaded.discriminator.dtype) == expected
    assert_same_state(pipe.generator, loaded.generator, expected[0])


def test_torch_dtype_is_accepted_with_diffusers_deprecation_warning(saved):
    pipe, folder = saved
    with pytest.warns(FutureWarning, match="torch_dtype"):
        loaded = MetaGANPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert loaded.generator.dtype == torch.bfloat16
    with pytest.warns(FutureWarning, match="torch_dtype"):
        per_component = MetaGANPipeline.from_pretrained(folder, torch_dtype={"generator": torch.float16})
    assert (per_component.generator.dtype, per_component.discriminator.dtype) == (torch.float16, torch.float32)
    with pytest.raises(ValueError, match="both `dtype` and `torch_dtype`"):
        MetaGANPipeline.from_pretrained(folder, dtype=torch.float16, torch_dtype=torch.float16)


def test_loading_logs_which_component_was_loaded(saved, caplog):
    _, folder = saved
    with caplog.at_level(logging.INFO, logger="metagan_hub"):
        MetaGANPipeline.from_pretrained(folder)
    for name, cls in (("generator", "MetaGANGenerator"), ("discriminator", "MetaGANDiscriminator")):
        assert f"Loaded {name} as {cls} from `{name}` subfolder of {folder}." in caplog.text


def test_low_cpu_mem_usage_both_ways(saved):
    pipe, folder = saved
    for flag in (True, False):
        loaded = MetaGANPipeline.from_pretrained(folder, low_cpu_mem_usage=flag)
        assert_same_state(pipe.generator, loaded.generator)


# ---------------------------------------------------------------- to(), dtypes, devices


def test_to_dtype_and_device():
    pipe = tiny_pipeline()
    assert pipe.device == torch.device("cpu")
    reference = generate(pipe)
    pipe.to(torch.bfloat16)
    assert {m.dtype for m in pipe.components.values() if m is not None} == {torch.bfloat16}
    out = generate(pipe)
    assert out.dtype == torch.float32  # outputs are float32 whatever the weights
    assert_outputs_close(out, reference, dtype=torch.bfloat16)
    pipe.to("cpu", torch.float32)
    assert pipe.dtype == torch.float32 and pipe.device.type == "cpu"
    assert_outputs_close(generate(pipe), reference, dtype=torch.bfloat16)  # weights were rounded once


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_and_back():
    pipe = tiny_pipeline()
    reference = generate(pipe)
    pipe.to("cuda")
    assert pipe.device.type == "cuda"
    out = pipe(batch_size=4, generator=torch.Generator("cuda").manual_seed(0), output_type="pt").images
    assert out.device.type == "cuda" and out.shape == reference.shape
    pipe.to("cpu")
    assert_outputs_close(generate(pipe), reference)


# ---------------------------------------------------------------- outputs


def test_output_types_and_return_dict():
    pipe = tiny_pipeline()
    pt = generate(pipe, batch_size=3)
    assert pt.shape == (3, 1, SIZE, SIZE) and pt.dtype == torch.float32
    assert float(pt.min()) >= 0 and float(pt.max()) <= 1
    np_images = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert (
        isinstance(np_images, np.ndarray) and np_images.shape == (3, SIZE, SIZE, 1) and np_images.dtype == np.float32
    )
    # the same object, the same latents: the conversion alone differs
    np.testing.assert_array_equal(np_images, pt.permute(0, 2, 3, 1).numpy())
    pil = pipe(batch_size=3, generator=torch.Generator().manual_seed(0)).images
    assert isinstance(pil, list) and len(pil) == 3 and all(isinstance(i, PIL.Image.Image) for i in pil)
    assert pil[0].size == (SIZE, SIZE)
    np.testing.assert_array_equal(np.asarray(pil[1]), (np_images[1, :, :, 0] * 255).round().astype(np.uint8))
    as_tuple = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), output_type="pt", return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    assert torch.equal(as_tuple[0], pt)


def test_seeded_determinism_and_seed_sensitivity():
    pipe = tiny_pipeline()
    # the same object with the same seed repeats the same computation: exact
    assert torch.equal(generate(pipe, seed=7), generate(pipe, seed=7))
    assert not torch.allclose(generate(pipe, seed=7), generate(pipe, seed=8))


def test_batch_consistency():
    pipe = tiny_pipeline()
    seeds = [3, 4, 5, 6]
    batch = pipe(batch_size=4, generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="pt").images
    for i, seed in enumerate(seeds):
        single = pipe(batch_size=1, generator=[torch.Generator().manual_seed(seed)], output_type="pt").images
        assert_outputs_close(single[0], batch[i])  # other batch sizes take other kernels


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_chunking_does_not_change_results(chunk_size):
    pipe = tiny_pipeline()
    assert_outputs_close(generate(pipe, batch_size=7, chunk_size=chunk_size), generate(pipe, batch_size=7))


def test_progress_bar_config(capsys):
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=False, desc="conformance-bar")
    pipe(batch_size=2, output_type="pt", chunk_size=1)
    assert "conformance-bar" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    pipe(batch_size=2, output_type="pt", chunk_size=1)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- layerwise casting


@pytest.mark.parametrize("storage_dtype", [torch.float8_e4m3fn, torch.bfloat16])
def test_layerwise_casting_in_the_pipeline(storage_dtype):
    pipe = tiny_pipeline()
    reference = generate(pipe, batch_size=40)  # >= 32 images: the CPU fast path is skipped under casting
    pipe.generator.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=torch.float32)
    pipe.discriminator.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=torch.float32)
    assert pipe.generator.proj.weight.dtype == storage_dtype
    assert pipe.generator.dtype == torch.float32  # diffusers reports the compute dtype
    out = generate(pipe, batch_size=40)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    # weights stored in 8 or 16 bits: close to the float32 images, not equal
    assert (out - reference).abs().mean() < (0.05 if storage_dtype == torch.float8_e4m3fn else 0.01)
    logits = pipe.discriminator(out[:4] * 2 - 1).logits
    assert logits.shape == (4,) and torch.isfinite(logits).all()


# ---------------------------------------------------------------- plain diffusers, card info, paths


def test_plain_diffusers_loading_keeps_card_info(tmp_path):
    pipe = tiny_pipeline()
    pipe.card_info = {"base_model": "org/metagan-base", "training": {"algorithm": "reptile", "steps": 12}}
    pipe.save_pretrained(tmp_path / "a")
    loaded = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "a", trust_remote_code=True)
    assert isinstance(loaded, MetaGANPipeline)
    assert loaded.card_info["training"] == {"algorithm": "reptile", "steps": 12}
    assert loaded.card_info["base_model"] == "org/metagan-base"
    loaded.save_pretrained(tmp_path / "b")
    readme = (tmp_path / "b" / "README.md").read_text()
    assert "reptile" in readme and "org/metagan-base" in readme
    assert str(tmp_path) not in "".join(text_files(tmp_path / "b").values())


def test_adapted_from_local_folder_never_writes_the_local_path(tmp_path):
    base = tmp_path / "my-meta-checkpoint"
    tiny_pipeline().save_pretrained(base)
    pipe = MetaGANPipeline.from_pretrained(base)
    adapted = pipe.adapt(
        torch.rand(4, 1, SIZE, SIZE) * 2 - 1, num_steps=2, batch_size=2, generator=torch.Generator().manual_seed(0)
    )
    assert adapted.card_info["base_model"] == str(base)  # known at runtime
    adapted.save_pretrained(tmp_path / "out")
    texts = text_files(tmp_path / "out")
    for rel, text in texts.items():
        assert str(tmp_path) not in text, rel
        assert "_name_or_path" not in text, rel
    info = json.loads(texts["metagan_hub.json"])
    assert info["base_model"] is None and info["base_model_local_name"] == "my-meta-checkpoint"
    assert info["adaptation"]["base_model"] is None
    assert "Adapted from a local checkpoint (`my-meta-checkpoint`) that is not on the Hub." in texts["README.md"]
    assert "| shots | 4 |" in texts["README.md"]
    # an adapted pipeline's card is titled as one and says what it was adapted on
    assert "\n# Adapted Meta-GAN\n" in texts["README.md"]
    assert "Adapted with `MetaGANPipeline.adapt()` to 4 images in 2 steps." in texts["README.md"]
    assert "Adapted on the 4 images given to `adapt()`." in texts["README.md"]
    assert "whose weights are adapted from a meta-learned starting point." in texts["README.md"]


def test_resaved_configs_have_no_name_or_path(saved, tmp_path):
    _, folder = saved
    MetaGANPipeline.from_pretrained(folder).save_pretrained(tmp_path)
    for rel, text in text_files(tmp_path).items():
        assert "_name_or_path" not in text and str(folder) not in text, rel


def test_hub_base_model_is_kept(tmp_path):
    pipe = tiny_pipeline()
    pipe.card_info = {"base_model": "org/metagan-kanji-32"}
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "metagan_hub.json").read_text())["base_model"] == "org/metagan-kanji-32"
    assert "base_model: org/metagan-kanji-32" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("[1, 2, 3]", "JSON list, expected a JSON object"),
        ('{"adaptation": "abcdef"}', "`adaptation` is a str, expected dict"),
        ('{"tags": "gan"}', "`tags` is a str, expected list"),
        ('{"variety_setting": {"shot_augment": 1.0}}', "`variety_setting` is .*expected a JSON object"),
        ('{"variety_setting": {"shot_augment": -1, "latent_scale": 1.5}}', r"`variety_setting\.shot_augment` is -1"),
        ('{"variety_setting": {"shot_augment": 1, "latent_scale": 0}}', r"`variety_setting\.latent_scale` is 0"),
        (
            '{"variety_setting": {"shot_augment": 0, "latent_scale": 1, "diversity_loss": "xyz"}}',
            r"`variety_setting\.diversity_loss` is 'xyz'; expected .*'mixdl'",
        ),
        (
            '{"variety_setting": {"shot_augment": 0, "latent_scale": 1, "diversity_weight": 5}}',
            "`variety_setting` is .*optionally with",
        ),
        (
            '{"variety_setting": {"shot_augment": 0, "latent_scale": 1, "diversity_loss": "mixdl", '
            '"diversity_weight": -5}}',
            r"`variety_setting\.diversity_weight` is -5",
        ),
        ('{"variety_setting": {"shot_augment": 0, "latent_scale": 1, "seed": 3}}', "`variety_setting` is .*"),
        (
            '{"variety_setting": {"shot_augment": 0, "latent_scale": 1, "copy_stop": 1}}',
            r"`variety_setting\.copy_stop` is 1",
        ),
        (
            '{"variety_setting": {"shot_augment": 0, "latent_scale": 1, "copy_stop": 0}}',
            r"`variety_setting\.copy_stop` is 0",
        ),
        ("{not json", "is not valid JSON"),
    ],
)
def test_card_sidecar_of_wrong_shape_names_file_and_shape(saved, tmp_path, content, match):
    _, folder = saved
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    (target / "metagan_hub.json").write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        MetaGANPipeline.from_pretrained(target)
    assert "metagan_hub.json" in str(err.value)


def test_non_finite_weights_are_never_saved(tmp_path):
    pipe = tiny_pipeline()
    with torch.no_grad():
        pipe.discriminator.fc.weight[0, 3] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=r"`fc\.weight` of component `discriminator`"):
        pipe.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(NonFiniteWeightsError, match="MetaGANDiscriminator"):
        pipe.discriminator.save_pretrained(tmp_path / "model")
    assert not (tmp_path / "model").exists()


# ---------------------------------------------------------------- re-export files without the package

_BLOCK_METAGAN = """
import importlib.abc, sys

class _NoMetaGAN(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "metagan_hub" or name.startswith("metagan_hub."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoMetaGAN())
"""


def test_without_the_package_the_saved_folder_says_what_to_install(saved):
    """One subprocess (imports are slow on a busy machine): plain diffusers without metagan_hub gets an ImportError
    saying what to install; then, with the package back but at a version outside the range, the same file refuses."""
    _, folder = saved
    code = _BLOCK_METAGAN + textwrap.dedent(
        f"""
        import diffusers
        try:
            diffusers.DiffusionPipeline.from_pretrained({str(folder)!r}, trust_remote_code=True)
        except ImportError as err:
            print("MISSING:", err)
        sys.meta_path.pop(0)
        import metagan_hub
        metagan_hub.__version__ = "99.0.0"
        path = {str(folder / "pipeline_metagan.py")!r}
        try:
            exec(compile(open(path).read(), path, "exec"), {{}})
        except ImportError as err:
            print("TOO-NEW:", err)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert "MISSING:" in run.stdout and "TOO-NEW:" in run.stdout, run.stdout + run.stderr
    missing, too_new = run.stdout.split("MISSING:", 1)[1].split("TOO-NEW:", 1)
    assert "needs the metagan-hub package" in missing and "pip install 'metagan-hub>=" in missing and ",<" in missing
    assert "99.0.0 is installed" in too_new and "pip install 'metagan-hub>=" in too_new
    assert "ModuleNotFoundError" not in run.stderr


# ---------------------------------------------------------------- memory of chunked generation

_PEAK_SCRIPT = """
import resource, sys, torch
from metagan_hub import MetaGANGenerator, MetaGANPipeline
torch.set_num_threads(1)
torch.manual_seed(0)
pipe = MetaGANPipeline(generator=MetaGANGenerator(latent_dim=8, sample_size=16, block_out_channels=(8, 4)))
pipe.set_progress_bar_config(disable=True)
pipe(batch_size=64, output_type="np")  # warm up allocators and kernels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
images = pipe(batch_size=N, output_type="np", chunk_size=256).images
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(images.nbytes, after - before)
"""


def test_chunked_numpy_generation_needs_about_the_result_plus_one_chunk():
    n = 40_000  # 41 MB of float32 images
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT.replace("N,", f"{n},")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    result, growth = map(int, run.stdout.split())
    assert result == n * 16 * 16 * 4
    # result + latents (1/32 of it) + one chunk's activations; the earlier list + cat + copy needed > 3x
    assert growth < 1.5 * result, (growth, result)


def test_generation_refuses_a_batch_that_cannot_fit(monkeypatch):
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match=r"`batch_size`=1000000000 would need about .* but only .* available"):
        pipe(batch_size=10**9, output_type="np")
    monkeypatch.setattr("metagan_hub.pipelines.pipeline_metagan.available_memory_bytes", lambda device=None: 10**6)
    with pytest.raises(ValueError, match="batch_size"):
        pipe(batch_size=1000, output_type="pt")
    assert pipe.estimate_memory(1000, output_type="pt") > 10**6


def test_models_are_importable_as_diffusers_components():
    # diffusers looks `ModelMixin` up on the module named in model_index.json (see DESIGN §4)
    import metagan_hub.models.discriminator_metagan as disc_module
    import metagan_hub.models.generator_metagan as gen_module

    assert gen_module.ModelMixin is diffusers.ModelMixin and disc_module.ModelMixin is diffusers.ModelMixin
    assert issubclass(MetaGANGenerator, diffusers.ModelMixin) and issubclass(
        MetaGANDiscriminator, diffusers.ModelMixin
    )
    assert tiny_generator().config.sample_size == SIZE
