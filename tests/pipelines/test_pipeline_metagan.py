"""Fast CPU tests of `MetaGANPipeline`: generation, input checks, save/load (folders, variants), model card."""

import copy
import json
import os
import re

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline
from metagan_hub.hub.model_card import render_pipeline_card
from metagan_hub.pipelines.pipeline_metagan import chunk_bounds
from tests.testing_utils import assert_outputs_close

LATENT_DIM = 8
SIZE = 16
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
REQUIRED_TAGS = {"gan", "meta-learning", "few-shot", "metagan_hub"}


def make_pipe(channels: int = 1, discriminator: bool = True, seed: int = 0) -> MetaGANPipeline:
    torch.manual_seed(seed)
    gen = MetaGANGenerator(latent_dim=LATENT_DIM, sample_size=SIZE, out_channels=channels, block_out_channels=(16, 8))
    disc = MetaGANDiscriminator(sample_size=SIZE, in_channels=channels, block_out_channels=(8, 16))
    pipe = MetaGANPipeline(generator=gen, discriminator=disc if discriminator else None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load(path, loader=MetaGANPipeline, **kwargs) -> MetaGANPipeline:
    pipe = loader.from_pretrained(path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: MetaGANPipeline, seed: int = 0, batch_size: int = 4, **kwargs) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return pipe(batch_size=batch_size, generator=generator, output_type="pt", **kwargs).images


def assert_same_weights(a: nn.Module, b: nn.Module, dtype: torch.dtype | None = None) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        expected = sa[key] if dtype is None else sa[key].to(dtype)
        assert sb[key].dtype == expected.dtype, key
        assert torch.equal(expected, sb[key]), key  # state dicts round-trip exactly


def all_files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)


def front_matter(readme: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", readme, flags=re.S)
    assert match, "README.md has no YAML front matter"
    return yaml.safe_load(match.group(1))


def python_blocks(readme: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme, flags=re.S)


@pytest.fixture(scope="module")
def pipe():
    """Shared read-only pipeline (tests that mutate a pipeline build their own)."""
    return make_pipe()


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    """`pipe` saved once, with `base_model` set in its card metadata."""
    folder = tmp_path_factory.mktemp("saved")
    pipe.card_info = {"base_model": "org/base"}
    pipe.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- generation


@pytest.mark.parametrize("channels", [1, 3])
def test_output_types(channels):
    pipe = make_pipe(channels)
    pt = generate(pipe, batch_size=2)
    assert isinstance(pt, torch.Tensor) and pt.shape == (2, channels, SIZE, SIZE)
    assert pt.dtype == torch.float32 and pt.min() >= 0 and pt.max() <= 1 and pt.std() > 0

    arr = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert isinstance(arr, np.ndarray) and arr.shape == (2, SIZE, SIZE, channels)
    assert arr.min() >= 0 and arr.max() <= 1
    np.testing.assert_array_equal(arr, pt.permute(0, 2, 3, 1).numpy())  # the same pipeline twice: exact

    pil = pipe(batch_size=2, generator=torch.Generator().manual_seed(0)).images  # "pil" is the default
    assert isinstance(pil, list) and len(pil) == 2
    for image, expected in zip(pil, arr):
        assert isinstance(image, PIL.Image.Image)
        assert image.mode == ("L" if channels == 1 else "RGB")
        assert image.size == (SIZE, SIZE)
        np.testing.assert_array_equal(
            np.asarray(image).reshape(SIZE, SIZE, channels), (expected * 255).round().astype(np.uint8)
        )


def test_return_dict_false_gives_tuple(pipe):
    out = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt", return_dict=False)
    assert type(out) is tuple and len(out) == 1
    assert torch.equal(out[0], generate(pipe, batch_size=2))  # the same pipeline twice: exact


def test_seed_determinism(pipe):
    a, b, c = generate(pipe, seed=0), generate(pipe, seed=0), generate(pipe, seed=1)
    assert torch.equal(a, b)  # the same pipeline twice: exact
    assert not torch.allclose(a, c, atol=1e-3)
    # images within one batch differ from each other
    assert not torch.allclose(a[0], a[1], atol=1e-3)


def test_list_of_generators(pipe):
    seeds = [3, 4, 5]
    batch = pipe(batch_size=3, generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="pt").images
    assert batch.shape == (3, 1, SIZE, SIZE)
    for i, seed in enumerate(seeds):
        # image i depends only on generator i
        torch.testing.assert_close(batch[i : i + 1], generate(pipe, seed=seed, batch_size=1), rtol=0, atol=1e-5)


def test_chunked_generation_equals_unchunked(pipe):
    chunks = []
    hook = pipe.generator.register_forward_hook(lambda module, args, out: chunks.append(args[0].shape[0]))
    try:
        whole = generate(pipe, batch_size=7)
        assert chunks == [7]
        chunks.clear()
        chunked = generate(pipe, batch_size=7, chunk_size=3)
        assert chunks == [3, 2, 2]  # memory is bounded by the chunk size; the fewest chunks, of even sizes
    finally:
        hook.remove()
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_images", [0, 1, 7, 63, 64, 65, 128, 129, 200, 1000])
@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_chunk_bounds_cover_in_the_fewest_even_chunks(num_images, chunk_size):
    bounds = chunk_bounds(num_images, chunk_size)
    assert len(bounds) == -(-num_images // chunk_size)  # the fewest chunks of at most chunk_size
    assert [start for start, _ in bounds[1:]] == [stop for _, stop in bounds[:-1]]  # contiguous, in order
    if bounds:
        assert bounds[0][0] == 0 and bounds[-1][1] == num_images
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) <= chunk_size and max(sizes) - min(sizes) <= 1


def test_chunk_bounds_avoid_a_small_last_chunk():
    assert [b - a for a, b in chunk_bounds(200, 64)] == [50, 50, 50, 50]  # not 64, 64, 64, 8
    assert [b - a for a, b in chunk_bounds(87, 64)] == [44, 43]


def test_explicit_latents(pipe):
    latents = torch.randn(3, LATENT_DIM, generator=torch.Generator().manual_seed(7))
    out = pipe(batch_size=3, latents=latents, output_type="pt").images
    with torch.no_grad():
        expected = (pipe.generator(latents).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    # given latents win over the generator
    again = pipe(batch_size=3, latents=latents, generator=torch.Generator().manual_seed(99), output_type="pt").images
    assert torch.equal(out, again)  # the same pipeline on the same latents twice: exact


def test_latent_scale_multiplies_drawn_and_given_latents(pipe):
    latents = torch.randn(3, LATENT_DIM, generator=torch.Generator().manual_seed(7))
    scaled = pipe(batch_size=3, latents=latents, latent_scale=1.5, output_type="pt").images
    assert torch.equal(scaled, pipe(batch_size=3, latents=1.5 * latents, output_type="pt").images)
    assert not torch.allclose(scaled, pipe(batch_size=3, latents=latents, output_type="pt").images)
    # drawn latents: the same draw as without the scale, then scaled
    drawn = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), latent_scale=1.5, output_type="pt").images
    assert torch.equal(drawn, scaled)
    plain = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="pt").images
    assert torch.equal(plain, pipe(batch_size=3, latents=latents, latent_scale=1, output_type="pt").images)
    # more spread: the samples' mean pairwise distance grows with the scale
    many = torch.randn(32, LATENT_DIM, generator=torch.Generator().manual_seed(0))
    spread = [
        torch.pdist(pipe(batch_size=32, latents=many, latent_scale=s, output_type="pt").images.flatten(1)).mean()
        for s in (0.5, 1.0, 2.0)
    ]
    assert spread[0] < spread[1] < spread[2]


BAD_CALLS = [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=-1), "batch_size"),
    (dict(batch_size=1.5), "batch_size"),
    (dict(batch_size=True), "batch_size"),
    (dict(output_type="latent"), "output_type"),
    (dict(output_type="PIL"), "output_type"),
    (dict(batch_size=2, latents=torch.zeros(3, LATENT_DIM)), "latents"),
    (dict(batch_size=2, latents=torch.zeros(2, LATENT_DIM + 1)), "latents"),
    (dict(batch_size=2, latents=torch.zeros(2, LATENT_DIM, 1, 1)), "latents"),
    (dict(batch_size=2, latents=torch.full((2, LATENT_DIM), float("nan"))), "latents"),
    (dict(batch_size=1, latents=torch.tensor([[0.0] * (LATENT_DIM - 1) + [float("inf")]])), "latents"),
    (dict(batch_size=3, generator=[torch.Generator(), torch.Generator()]), "generator"),
    (dict(batch_size=2, chunk_size=0), "chunk_size"),
    (dict(latent_scale=0), "latent_scale"),
    (dict(latent_scale=-1.5), "latent_scale"),
    (dict(latent_scale=float("inf")), "latent_scale"),
    (dict(latent_scale="2"), "latent_scale"),
]


@pytest.mark.parametrize("kwargs, argument", BAD_CALLS, ids=[f"{i}-{a}" for i, (_, a) in enumerate(BAD_CALLS)])
def test_check_inputs_errors_name_the_argument(pipe, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        pipe(**kwargs)


@pytest.mark.parametrize("fused_upsampling", [False, True, None])
def test_enable_fast_generation_same_images(fused_upsampling):
    pipe = make_pipe(3)
    before = generate(pipe, batch_size=5)
    pipe.enable_fast_generation(channels_last=True, fused_upsampling=fused_upsampling)
    assert pipe.generator.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.generator.fused_upsampling is fused_upsampling
    torch.testing.assert_close(generate(pipe, batch_size=5), before, rtol=0, atol=1e-5)


def test_mismatched_generator_and_discriminator_raise():
    gen = MetaGANGenerator(latent_dim=LATENT_DIM, sample_size=SIZE, out_channels=1, block_out_channels=(16, 8))
    other_size = MetaGANDiscriminator(sample_size=32, in_channels=1, block_out_channels=(4, 4, 4))
    with pytest.raises(ValueError, match="discriminator"):
        MetaGANPipeline(generator=gen, discriminator=other_size)
    other_channels = MetaGANDiscriminator(sample_size=SIZE, in_channels=3, block_out_channels=(4, 4))
    with pytest.raises(ValueError, match="discriminator"):
        MetaGANPipeline(generator=gen, discriminator=other_channels)
    with pytest.raises(TypeError, match="generator"):
        MetaGANPipeline(generator=other_size)


# ---------------------------------------------------------------- saving and loading


def test_save_load_round_trip(pipe, saved):
    files = all_files(saved)
    required = {
        "README.md",
        "metagan_hub.json",
        "model_index.json",
        os.path.join("generator", "config.json"),
        os.path.join("generator", "diffusion_pytorch_model.safetensors"),
        os.path.join("discriminator", "config.json"),
        os.path.join("discriminator", "diffusion_pytorch_model.safetensors"),
    }
    assert required <= set(files)
    # weights only as safetensors; besides them only configs, the card and small re-export .py files
    assert all(f.endswith((".json", ".md", ".safetensors", ".py")) for f in files), files
    assert [f for f in files if f.endswith(".safetensors")] == sorted(
        f for f in required if f.endswith(".safetensors")
    )
    with open(saved / "model_index.json") as f:
        index = json.load(f)
    assert index["generator"] == ["metagan_hub.models.generator_metagan", "MetaGANGenerator"]
    assert index["discriminator"] == ["metagan_hub.models.discriminator_metagan", "MetaGANDiscriminator"]

    loaded = load(saved)
    assert isinstance(loaded, MetaGANPipeline)
    assert_same_weights(pipe.generator, loaded.generator)
    assert_same_weights(pipe.discriminator, loaded.discriminator)
    assert_outputs_close(generate(loaded, seed=5), generate(pipe, seed=5))  # two instances: up to kernel rounding


@pytest.mark.parametrize("variant", ["fp16", "bf16"])
def test_save_load_variants(tmp_path, variant):
    # as in diffusers, a variant is only a file label: the caller casts first
    dtype = DTYPES[variant]
    pipe = make_pipe(3)
    components = {n: m for n, m in pipe.components.items() if m is not None}  # no copy encoder here
    half = MetaGANPipeline(**{n: nn.Module.to(copy.deepcopy(m), dtype) for n, m in components.items()})
    half.set_progress_bar_config(disable=True)
    half.save_pretrained(tmp_path, variant=variant)

    files = all_files(tmp_path)
    assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    for component in ("generator", "discriminator"):
        weights = os.path.join(component, f"diffusion_pytorch_model.{variant}.safetensors")
        assert weights in files
        assert os.path.join(component, "diffusion_pytorch_model.safetensors") not in files
        assert {t.dtype for t in load_file(tmp_path / weights).values()} == {dtype}

    loaded = load(tmp_path, variant=variant, dtype=dtype)
    assert loaded.generator.dtype == dtype and loaded.discriminator.dtype == dtype
    assert_same_weights(pipe.generator, loaded.generator, dtype)
    assert_same_weights(pipe.discriminator, loaded.discriminator, dtype)

    images = generate(loaded, seed=2)
    assert images.dtype == torch.float32  # outputs are float32 whatever the weights
    assert_outputs_close(images, generate(half, seed=2), dtype=dtype)
    torch.testing.assert_close(images, generate(pipe, seed=2), rtol=0, atol=0.05)


def test_save_rejects_bad_variant_and_pickles(tmp_path):
    pipe = make_pipe()
    with pytest.raises(ValueError, match="variant"):
        pipe.save_pretrained(tmp_path / "a", variant="fp8")
    with pytest.raises(ValueError, match="safe_serialization"):
        pipe.save_pretrained(tmp_path / "b", safe_serialization=False)
    assert not [f for f in all_files(tmp_path) if f.endswith(PICKLE_SUFFIXES)]


def test_generation_only_checkpoint_round_trip(tmp_path):
    pipe = make_pipe(discriminator=False)
    assert pipe.discriminator is None
    pipe.save_pretrained(tmp_path)
    assert not (tmp_path / "discriminator").exists()
    loaded = load(tmp_path)
    assert loaded.discriminator is None
    assert_same_weights(pipe.generator, loaded.generator)
    assert_outputs_close(generate(loaded), generate(pipe))
    assert "adapt" not in "".join(python_blocks((tmp_path / "README.md").read_text()))


def test_plain_diffusers_loads_with_trust_remote_code(pipe, saved):
    loaded = load(saved, loader=diffusers.DiffusionPipeline, trust_remote_code=True)
    assert isinstance(loaded, MetaGANPipeline)
    assert isinstance(loaded.generator, MetaGANGenerator)
    assert_same_weights(pipe.generator, loaded.generator)
    assert_outputs_close(generate(loaded, seed=3), generate(pipe, seed=3))


def test_folder_without_model_index_raises(tmp_path):
    make_pipe().generator.save_pretrained(tmp_path / "generator")  # a component folder, but no pipeline index
    with pytest.raises(ValueError, match="model_index.json"):
        MetaGANPipeline.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "component, entry",
    [
        ("generator", ["diffusers", "UNet2DModel"]),
        ("discriminator", ["diffusers", "UNet2DModel"]),
        ("generator", ["metagan_hub.models.generator_metagan", "SomethingElse"]),
    ],
)
def test_unknown_component_class_raises(tmp_path, component, entry):
    make_pipe().save_pretrained(tmp_path)
    index_path = tmp_path / "model_index.json"
    index = json.loads(index_path.read_text())
    index[component] = entry
    index_path.write_text(json.dumps(index))
    expected = {"generator": "MetaGANGenerator", "discriminator": "MetaGANDiscriminator"}[component]
    with pytest.raises(ValueError, match=rf"(?s){component}.*{entry[1]}.*{expected}"):
        MetaGANPipeline.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["missing-folder", os.path.join("a", "b", "c")])
def test_nonexistent_path_raises(tmp_path, name):
    with pytest.raises(ValueError, match="pretrained_model_name_or_path"):
        MetaGANPipeline.from_pretrained(tmp_path / name)
    with pytest.raises(ValueError):
        MetaGANPipeline.from_pretrained(name)


# ---------------------------------------------------------------- model card


def test_model_card_metadata_and_snippet(saved):
    readme = (saved / "README.md").read_text()
    meta = front_matter(readme)
    assert meta["license"] == "apache-2.0"
    assert meta["library_name"] == "diffusers"
    assert REQUIRED_TAGS <= set(meta["tags"])
    assert meta["base_model"] == "org/base"
    blocks = python_blocks(readme)
    assert blocks and any("MetaGANPipeline.from_pretrained(" in b for b in blocks)
    for i, block in enumerate(blocks):
        compile(block, f"README.md python block {i}", "exec")


def test_model_card_without_base_model_and_with_repo_id(tmp_path):
    pipe = make_pipe()
    pipe.save_pretrained(tmp_path, repo_id="me/my-metagan")
    readme = (tmp_path / "README.md").read_text()
    meta = front_matter(readme)
    assert "base_model" not in meta and "base_model_relation" not in meta
    assert REQUIRED_TAGS <= set(meta["tags"])
    blocks = python_blocks(readme)
    assert any('MetaGANPipeline.from_pretrained("me/my-metagan")' in b for b in blocks)
    for block in blocks:
        compile(block, "README.md", "exec")


def test_card_info_round_trip(tmp_path):
    pipe = make_pipe()
    info = {
        "base_model": "org/base",
        "title": "My glyph GAN",
        "summary": "Adapted to one glyph.",
        "tags": ["kanji"],
        "training": {"algorithm": "reptile", "meta_steps": 3},
        "adaptation": {"num_steps": 5, "losses": [1.0, 0.5]},
    }
    pipe.card_info = copy.deepcopy(info)
    pipe.save_pretrained(tmp_path)
    with open(tmp_path / "metagan_hub.json") as f:
        assert json.load(f) == info
    with open(tmp_path / "model_index.json") as f:
        assert "card_info" not in json.load(f)
    loaded = load(tmp_path)
    assert {k: loaded.card_info[k] for k in info} == info
    readme = (tmp_path / "README.md").read_text()
    assert "kanji" in front_matter(readme)["tags"]
    assert front_matter(readme)["base_model_relation"] == "finetune"  # adapted from a Hub base model
    assert "My glyph GAN" in readme and "reptile" in readme

    # and survives a second save / load
    loaded.save_pretrained(tmp_path / "again")
    assert {k: load(tmp_path / "again").card_info[k] for k in info} == info


def test_model_card_evaluation_section(tmp_path):
    pipe = make_pipe()
    pipe.card_info = {"evaluation": "| contender | kid |\n|---|---|\n| this | 0.123 |"}
    pipe.save_pretrained(tmp_path / "base")
    readme = (tmp_path / "base" / "README.md").read_text()
    assert "## Evaluation" in readme and "| this | 0.123 |" in readme
    assert "## Evaluation" not in str(render_pipeline_card(make_pipe()))


def test_model_card_shows_the_card_images_saved_beside_it(tmp_path):
    pipe = make_pipe()
    folder = tmp_path / "out"
    (folder / "grids").mkdir(parents=True)
    pipe(batch_size=2).images[0].save(folder / "samples.png")
    pipe(batch_size=2).images[0].save(folder / "grids" / "shots.png")
    pipe.save_pretrained(folder, card_images=["grids/shots.png", "samples.png"])
    readme = (folder / "README.md").read_text()
    assert readme.index("![grids/shots.png](grids/shots.png)") < readme.index("![samples.png](samples.png)")
    assert readme.index("![samples.png](samples.png)") < readme.index("## Usage")
    assert "![" not in str(render_pipeline_card(pipe))  # no images unless named


@pytest.mark.parametrize(
    "card_images, message",
    [
        ("samples.png", "must be a list"),
        (["missing.png"], "is not a file in"),
        (["notes.txt"], "relative image file names"),
        (["../samples.png"], "relative image file names"),
        ([None], "relative image file names"),
    ],
)
def test_bad_card_images_raise_before_anything_is_written(tmp_path, card_images, message):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    make_pipe()(batch_size=1).images[0].save(tmp_path / "samples.png")  # outside the folder
    with pytest.raises(ValueError, match=f"`card_images`.*{message}|{message}.*`card_images`"):
        make_pipe().save_pretrained(folder, card_images=card_images)
    assert sorted(os.listdir(folder)) == ["notes.txt"]


def test_absolute_card_image_path_is_refused(tmp_path):
    image = tmp_path / "samples.png"
    make_pipe()(batch_size=1).images[0].save(image)
    with pytest.raises(ValueError, match="`card_images` entries must be relative"):
        make_pipe().save_pretrained(tmp_path / "out", card_images=[str(image)])


def test_push_with_card_images_needs_the_folder_that_holds_them():
    with pytest.raises(ValueError, match="`card_images`=\\['samples.png'\\] needs `save_directory`"):
        make_pipe().push_to_hub("me/my-metagan", card_images=["samples.png"])


def test_resaving_a_loaded_pipeline_does_not_record_where_it_was_loaded_from(tmp_path):
    make_pipe().save_pretrained(tmp_path / "first")
    loaded = MetaGANPipeline.from_pretrained(tmp_path / "first")
    assert loaded.card_info["name_or_path"] == str(tmp_path / "first")  # known at runtime (adapt() uses it)
    loaded.save_pretrained(tmp_path / "second")
    with open(tmp_path / "second" / "metagan_hub.json") as f:
        assert "name_or_path" not in json.load(f)
    assert str(tmp_path) not in (tmp_path / "second" / "README.md").read_text()
