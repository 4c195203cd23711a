"""The pipeline's optional copy encoder: the near-copy filter's features when present, saved and loaded as a pipeline
component, kept unchanged by `adapt()`, and its errors."""

import json

import pytest
import torch

from metagan_hub import MetaGANPipeline
from metagan_hub.metrics.classifiers import EvaluationClassifier
from metagan_hub.pipelines.copy_filter import (
    NearCopyDistance,
    copy_threshold_of_references,
    encoder_features,
    inference_encoder_body,
    nearest_reference_distance,
)
from tests.pipelines.test_pipeline_metagan import LATENT_DIM, SIZE, assert_same_weights, load, make_pipe

N = 12


def make_encoder(seed: int = 0, resolution: int = SIZE) -> EvaluationClassifier:
    torch.manual_seed(seed)
    return EvaluationClassifier(classes=["a", "b", "c"], resolution=resolution, block_out_channels=(8, 16)).eval()


def with_encoder(discriminator: bool = True) -> MetaGANPipeline:
    base = make_pipe(discriminator=discriminator)
    pipe = MetaGANPipeline(generator=base.generator, discriminator=base.discriminator, copy_encoder=make_encoder())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def latents(seed: int = 3, n: int = N) -> torch.Tensor:
    return torch.randn(n, LATENT_DIM, generator=torch.Generator().manual_seed(seed))


def plain(pipe, z: torch.Tensor) -> torch.Tensor:
    return pipe(batch_size=z.shape[0], latents=z, output_type="pt").images * 2 - 1  # [N, C, H, W] in [-1, 1]


def test_encoder_features_are_unit_length_penultimate_features_independent_of_the_batch():
    encoder = make_encoder()
    images = torch.rand(N, 1, SIZE, SIZE) * 2 - 1
    features = encoder_features(encoder, images)
    assert features.shape == (N, 16)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(N))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(encoder.features(images), dim=1)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(encoder_features(encoder, images, chunk_size=5), features, rtol=1e-5, atol=1e-6)


def test_with_an_encoder_every_image_goes_through_it_and_the_discriminator_is_not_needed():
    encoder = make_encoder()
    references = torch.rand(4, 1, SIZE, SIZE) * 2 - 1
    near = NearCopyDistance(None, references, encoder=encoder)
    images = torch.cat([references, torch.rand(36, 1, SIZE, SIZE) * 2 - 1])
    distance = near(images, set_gate=True)  # no gate with an encoder
    assert (distance[:4] < 1e-3).all() and distance.isfinite().all()
    assert near.encoder_passes == 40 and near.discriminator_passes == 0 and near.gate == float("inf")
    expected = nearest_reference_distance(encoder_features(encoder, images), encoder_features(encoder, references))
    torch.testing.assert_close(distance, expected)
    with pytest.raises(ValueError, match="needs a `discriminator` or an `encoder`"):
        NearCopyDistance(None, references)


def trained_looking_encoder(layers_per_block: int = 1) -> EvaluationClassifier:
    """An encoder whose BatchNorm layers hold running statistics and affine weights far from a new layer's."""
    torch.manual_seed(1)
    encoder = EvaluationClassifier(
        classes=["a", "b"], resolution=SIZE, block_out_channels=(8, 16, 24), layers_per_block=layers_per_block
    )
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.2, 3.0)
            module.weight.data.uniform_(-1.5, 1.5)  # negative scales too: pooling must not move past them
            module.bias.data.normal_(0, 0.5)
    return encoder.train()  # the filter uses running statistics whatever the mode


@pytest.mark.parametrize("layers_per_block", [1, 2])
def test_the_folded_encoder_body_gives_the_eval_features_and_leaves_the_encoder_alone(layers_per_block):
    encoder = trained_looking_encoder(layers_per_block)
    before = {key: value.clone() for key, value in encoder.state_dict().items()}
    body = inference_encoder_body(encoder)
    names = [type(layer).__name__ for layer in body]
    assert "BatchNorm2d" not in names and names.count("Conv2d") == 3 * layers_per_block
    assert names.count("MaxPool2d") == 2 and all(
        names[i + 1] == "ReLU" for i, n in enumerate(names) if n == "MaxPool2d"
    )
    assert all(layer.inplace for layer in body if isinstance(layer, torch.nn.ReLU))
    assert body[0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(N, 1, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        folded = body(images).mean(dim=(2, 3))
        expected = encoder.eval().features(images)
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        encoder_features(encoder, images, chunk_size=5, body=body),
        encoder_features(encoder, images),
        rtol=1e-4,
        atol=1e-5,
    )
    assert all(torch.equal(value, before[key]) for key, value in encoder.state_dict().items())
    assert not any(isinstance(m, torch.nn.ReLU) and m.inplace for m in encoder.modules())
    assert [type(layer).__name__ for layer in encoder.body].count("BatchNorm2d") == 3 * layers_per_block


def test_the_filter_uses_the_encoders_running_statistics_in_any_mode():
    encoder = trained_looking_encoder()
    references = torch.rand(4, 1, SIZE, SIZE) * 2 - 1
    images = torch.rand(N, 1, SIZE, SIZE) * 2 - 1
    distance = NearCopyDistance(None, references, encoder=encoder)(images)
    assert encoder.training  # not switched to eval mode by the filter
    eval_encoder = encoder.eval()
    expected = nearest_reference_distance(
        encoder_features(eval_encoder, images), encoder_features(eval_encoder, references)
    )
    torch.testing.assert_close(distance, expected, rtol=1e-4, atol=1e-5)


def test_copy_filter_features_names_where_the_filter_judges():
    assert with_encoder().copy_filter_features == "encoder"
    assert with_encoder(discriminator=False).copy_filter_features == "encoder"
    assert make_pipe().copy_filter_features == "discriminator"
    no_features = make_pipe(discriminator=False)
    assert no_features.copy_filter_features is None
    with pytest.raises(ValueError, match="has neither"):
        no_features(batch_size=2, avoid_copies_of=torch.rand(2, 1, SIZE, SIZE))


@pytest.mark.parametrize("discriminator", [True, False], ids=["with-discriminator", "encoder-only"])
def test_the_filter_judges_in_the_encoders_features(discriminator):
    pipe = with_encoder(discriminator=discriminator)
    z = latents()
    before = plain(pipe, z)
    references = before[:3].clone()  # samples 0-2 are exact copies of the references
    images, stats = pipe.replace_near_copies(z, references, 1e-3, 1.0, torch.Generator().manual_seed(0))
    assert stats["near_copies"] == 3 and stats["replaced"] == 3
    assert stats["discriminator_passes"] == 0 and stats["encoder_passes"] == N + stats["extra_draws"]
    torch.testing.assert_close(images[3:], before[3:], rtol=0, atol=1e-6)
    # no output sample is a near-copy in the encoder's features
    features = encoder_features(pipe.copy_encoder, references)
    threshold = copy_threshold_of_references(features, copy_margin=1e-3)
    assert (nearest_reference_distance(encoder_features(pipe.copy_encoder, images), features) >= threshold).all()
    # the pipeline's own encoder stays as it was (the filter runs an eval-mode copy)
    assert not pipe.copy_encoder.training
    out = pipe(batch_size=N, latents=z, avoid_copies_of=references, copy_margin=1e-3, output_type="pt")
    assert out.images.shape == (N, 1, SIZE, SIZE)


def test_save_and_load_keep_the_encoder_and_folders_without_one_load_as_before(tmp_path):
    pipe = with_encoder()
    pipe.save_pretrained(tmp_path / "with")
    index = json.loads((tmp_path / "with" / "model_index.json").read_text(encoding="utf-8"))
    assert index["copy_encoder"] == ["metagan_hub.metrics.classifiers", "EvaluationClassifier"]
    assert (tmp_path / "with" / "copy_encoder" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "with" / "copy_encoder" / "metagan_hub.metrics.classifiers.py").is_file()  # Hub re-export
    loaded = load(tmp_path / "with")
    assert isinstance(loaded.copy_encoder, EvaluationClassifier) and not loaded.copy_encoder.training
    assert_same_weights(pipe.copy_encoder, loaded.copy_encoder)
    assert "| copy_encoder | `EvaluationClassifier` |" in (tmp_path / "with" / "README.md").read_text(encoding="utf-8")
    # without its discriminator the loaded pipeline still filters, in the encoder's features
    generation_only = load(tmp_path / "with", discriminator=None)
    z = latents()
    references = plain(generation_only, z)[:2]
    _, stats = generation_only.replace_near_copies(z, references, 1e-3, 1.0, torch.Generator().manual_seed(0))
    assert stats["encoder_passes"] > 0
    assert load(tmp_path / "with", dtype={"copy_encoder": torch.float32}).copy_encoder.dtype == torch.float32
    make_pipe().save_pretrained(tmp_path / "without")
    assert load(tmp_path / "without").copy_encoder is None


def test_adapt_keeps_the_encoder_unchanged():
    pipe = with_encoder()
    before = {k: v.clone() for k, v in pipe.copy_encoder.state_dict().items()}
    adapted = pipe.adapt(torch.rand(4, 1, SIZE, SIZE) * 2 - 1, num_steps=2, generator=torch.Generator().manual_seed(0))
    assert adapted.copy_encoder is pipe.copy_encoder
    for key, value in pipe.copy_encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_wrong_encoder_is_refused_naming_the_argument():
    base = make_pipe()
    with pytest.raises(TypeError, match="`copy_encoder` must be an EvaluationClassifier or None, got Linear"):
        MetaGANPipeline(generator=base.generator, copy_encoder=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`copy_encoder` must match the generator's resolution and channels"):
        MetaGANPipeline(generator=base.generator, copy_encoder=make_encoder(resolution=2 * SIZE))
    with pytest.raises(ValueError, match="'copy_encoder'"):
        MetaGANPipeline._check_dtype({"encoder": torch.float32})
