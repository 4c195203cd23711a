"""Few-shot adaptation (`MetaGANPipeline.adapt` / `adapt_pipeline`) on tiny models: the meta-weights stay untouched,
precision is per call, training is deterministic and actually learns, EMA / FreezeD change what is trained, the
adaptation record reaches the model card, and bad input fails early with a `ValueError` naming the argument."""

from __future__ import annotations

import hashlib
import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

import metagan_hub.training.adaptation as adaptation
import metagan_hub.training.gan_step as gan_step_module
from metagan_hub import MetaGANGenerator, MetaGANPipeline
from metagan_hub.training.adaptation import NonFiniteLossError, adapt_pipeline
from tests.testing_utils import assert_outputs_close, tiny_pipeline

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fresh_accelerate_state():
    """Start and end with no process-wide `AcceleratorState`, so tests creating an `Accelerator` stay independent."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def square_shot() -> torch.Tensor:
    """A white square on black, `[1, 1, 16, 16]` in [-1, 1]."""
    shot = -torch.ones(1, 1, SIZE, SIZE)
    shot[..., 4:12, 4:12] = 1.0
    return shot


def random_shots(n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, SIZE, SIZE, generator=g) * 2 - 1  # [N, 1, 16, 16] in [-1, 1]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def hashes(pipe: MetaGANPipeline) -> dict[str, str]:
    """sha256 of every tensor (parameters and buffers) of the generator and the discriminator."""
    out = {}
    for name in ("generator", "discriminator"):
        for key, t in getattr(pipe, name).state_dict().items():
            out[f"{name}.{key}"] = hashlib.sha256(tensor_bytes(t)).hexdigest()
    return out


def state(pipe: MetaGANPipeline, name: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in getattr(pipe, name).state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def samples(pipe: MetaGANPipeline, n: int = 64, seed: int = 1) -> torch.Tensor:
    return pipe(batch_size=n, generator=seeded(seed), output_type="pt").images * 2 - 1  # [N, C, H, W] in [-1, 1]


# ---------------------------------------------------------------------------------------------------------- basics


def test_meta_weights_untouched_and_new_pipeline_returned():
    pipe = tiny_pipeline()
    before = hashes(pipe)
    grads_before = [p.grad for m in (pipe.generator, pipe.discriminator) for p in m.parameters()]
    adapted = pipe.adapt(
        random_shots(), num_steps=3, ema_decay=0.9, freeze_discriminator_blocks=1, generator=seeded(0)
    )
    assert hashes(pipe) == before
    assert all(g is None for g in grads_before)
    assert all(p.grad is None for m in (pipe.generator, pipe.discriminator) for p in m.parameters())
    assert adapted is not pipe
    assert adapted.generator is not pipe.generator and adapted.discriminator is not pipe.discriminator
    # no parameter storage is shared with the meta-weights
    base_ptrs = {p.data_ptr() for m in (pipe.generator, pipe.discriminator) for p in m.parameters()}
    assert not base_ptrs & {p.data_ptr() for m in (adapted.generator, adapted.discriminator) for p in m.parameters()}
    assert hashes(adapted) != before
    assert "adaptation" not in pipe.card_info
    assert not adapted.generator.training and not adapted.discriminator.training


def test_adapted_pipeline_keeps_dtype_of_base():
    pipe = tiny_pipeline()
    pipe.to(dtype=torch.bfloat16)
    adapted = pipe.adapt(random_shots(), num_steps=2, generator=seeded(0))
    assert adapted.generator.dtype == torch.bfloat16 and adapted.discriminator.dtype == torch.bfloat16
    assert pipe.generator.dtype == torch.bfloat16
    assert torch.isfinite(samples(adapted, n=4)).all()


def test_two_precisions_in_one_process_also_with_existing_accelerator(fresh_accelerate_state):
    from accelerate import Accelerator

    pipe = tiny_pipeline()
    shots = random_shots()
    fp32 = pipe.adapt(shots, num_steps=3, mixed_precision="no", generator=seeded(0))
    bf16 = pipe.adapt(shots, num_steps=3, mixed_precision="bf16", generator=seeded(0))
    assert fp32.card_info["adaptation"]["mixed_precision"] == "no"
    assert bf16.card_info["adaptation"]["mixed_precision"] == "bf16"
    # autocast really ran: same seed, different arithmetic
    assert not same_state(state(fp32, "generator"), state(bf16, "generator"))

    accelerator = Accelerator(mixed_precision="no")  # e.g. created by a training script
    again_bf16 = pipe.adapt(shots, num_steps=3, mixed_precision="bf16", generator=seeded(0), accelerator=accelerator)
    again_fp32 = pipe.adapt(shots, num_steps=3, mixed_precision="no", generator=seeded(0), accelerator=accelerator)
    # the accelerator's own precision does not leak into the call: results match the calls without it, bit for bit
    for name in ("generator", "discriminator"):
        assert same_state(state(again_bf16, name), state(bf16, name))
        assert same_state(state(again_fp32, name), state(fp32, name))
    for adapted in (fp32, bf16, again_bf16, again_fp32):
        assert all(torch.isfinite(p).all() for p in adapted.generator.parameters())


def test_adaptation_learns_an_easy_class():
    # Every shot is the same white square: after a few dozen steps the samples must be much closer to it than the
    # meta-weights' samples (a criterion that fails if adapt() trains nothing or trains the wrong way).
    pipe = tiny_pipeline()
    shot = square_shot()
    base_distance = (samples(pipe) - shot).pow(2).mean().item()
    adapted = pipe.adapt(shot.repeat(5, 1, 1, 1), num_steps=30, learning_rate=2e-3, augment=None, generator=seeded(0))
    distance = (samples(adapted) - shot).pow(2).mean().item()
    assert distance < 0.4 * base_distance, (distance, base_distance)
    for name in ("generator", "discriminator"):
        base, new = state(pipe, name), state(adapted, name)
        trained = [k for k in base if k.endswith("weight") and not k.startswith(("conv_in.", "blocks.0."))]
        if name == "generator":  # the default FreezeD keeps only the discriminator's lowest layers
            trained = [k for k in base if k.endswith("weight")]
        assert all(not torch.equal(base[k], new[k]) for k in trained), name
    losses = adapted.card_info["adaptation"]["losses"]
    assert len(losses) == 30 and all(math.isfinite(row["d_loss"]) and math.isfinite(row["g_loss"]) for row in losses)


def test_same_seed_is_bit_identical_different_seed_differs():
    pipe = tiny_pipeline()
    shots = random_shots()
    kwargs = dict(num_steps=3, ema_decay=0.5)  # default augment: its randomness must come from the seed too
    a = pipe.adapt(shots, generator=seeded(123), **kwargs)
    b = pipe.adapt(shots, generator=seeded(123), **kwargs)
    c = pipe.adapt(shots, generator=seeded(124), **kwargs)
    for name in ("generator", "discriminator"):  # bitwise: adapt() promises bit-identical weights for the same seed
        assert same_state(state(a, name), state(b, name))
        assert not same_state(state(a, name), state(c, name))
    assert_outputs_close(samples(a, n=8), samples(b, n=8))  # two instances: up to kernel rounding
    assert a.card_info["adaptation"]["seed"] == 123 and c.card_info["adaptation"]["seed"] == 124
    # without a generator a seed is drawn and recorded, and it reproduces the run
    d = pipe.adapt(shots, **kwargs)
    seed = d.card_info["adaptation"]["seed"]
    e = pipe.adapt(shots, generator=seeded(seed), **kwargs)
    assert same_state(state(d, "generator"), state(e, "generator"))


def test_image_sources_give_identical_adaptation(tmp_path):
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, size=(5, SIZE, SIZE), dtype=np.uint8)  # [N, H, W]
    pil = [Image.fromarray(a, mode="L") for a in arrays]
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, image in enumerate(pil):
        image.save(folder / f"{i}.png")
    tensor = torch.from_numpy(arrays).float().div(127.5).sub(1)[:, None]  # [N, 1, H, W] in [-1, 1]
    sources = {"pil": pil, "folder": folder, "str_folder": str(folder), "numpy": arrays[..., None], "tensor": tensor}
    try:
        import datasets

        sources["dataset"] = datasets.Dataset.from_dict({"img": pil}, features=datasets.Features(img=datasets.Image()))
    except ImportError:  # pragma: no cover - datasets is in the test extra
        pass
    pipe = tiny_pipeline()
    results = {
        name: pipe.adapt(src, num_steps=1, augment=None, generator=seeded(0), image_column="img")
        for name, src in sources.items()
    }
    reference = state(results["tensor"], "discriminator")
    for name, adapted in results.items():  # bitwise: the same images and seed promise bit-identical weights
        assert adapted.card_info["adaptation"]["shots"] == 5, name
        assert same_state(state(adapted, "discriminator"), reference), name


# ------------------------------------------------------------------------------------------------------ EMA, FreezeD


def test_ema_uses_diffusers_ema_model_and_returns_its_weights(monkeypatch):
    import diffusers.training_utils

    created = []

    class SpyEMA(diffusers.training_utils.EMAModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_steps = 0
            created.append(self)

        def step(self, parameters):
            super().step(parameters)
            self.num_steps += 1

    monkeypatch.setattr(diffusers.training_utils, "EMAModel", SpyEMA)
    pipe = tiny_pipeline()
    shots = random_shots()
    plain = pipe.adapt(shots, num_steps=4, generator=seeded(0))
    assert created == []
    ema = pipe.adapt(shots, num_steps=4, ema_decay=0.9, generator=seeded(0))
    assert len(created) == 1 and created[0].num_steps == 4 and created[0].decay == 0.9
    # the returned generator holds the EMA (shadow) weights, which differ from the last iterate
    ema_params = list(ema.generator.parameters())
    assert len(ema_params) == len(created[0].shadow_params)
    assert all(torch.equal(p, s) for p, s in zip(ema_params, created[0].shadow_params))
    assert not same_state(state(plain, "generator"), state(ema, "generator"))
    # EMA only changes what is returned, not the training itself: the discriminators are bit-identical
    assert same_state(state(plain, "discriminator"), state(ema, "discriminator"))
    assert ema.card_info["adaptation"]["ema_decay"] == 0.9 and plain.card_info["adaptation"]["ema_decay"] is None


def test_ema_decay_ramps_up_over_the_first_steps():
    # EMAModel without warmup uses min(ema_decay, (1 + t) / (10 + t)) at update t: over 6 steps the ramp (at most
    # 0.6) is below both caps, so 0.9 and 0.99 return the same weights; a cap under the ramp changes them
    pipe, shots = tiny_pipeline(), random_shots()
    adapted = {d: pipe.adapt(shots, num_steps=6, ema_decay=d, generator=seeded(0)) for d in (0.3, 0.9, 0.99)}
    assert same_state(state(adapted[0.9], "generator"), state(adapted[0.99], "generator"))
    assert not same_state(state(adapted[0.3], "generator"), state(adapted[0.9], "generator"))


@pytest.mark.parametrize("n", [1, 2])
def test_freeze_discriminator_blocks(n):
    pipe = tiny_pipeline()
    assert pipe.discriminator.num_blocks == 2
    adapted = pipe.adapt(random_shots(), num_steps=3, freeze_discriminator_blocks=n, generator=seeded(0))
    base, new = state(pipe, "discriminator"), state(adapted, "discriminator")
    frozen = ("conv_in.",) + tuple(f"blocks.{i}." for i in range(n))
    frozen_keys = [k for k in base if k.startswith(frozen)]
    trained_keys = [k for k in base if not k.startswith(frozen)]
    assert frozen_keys and trained_keys
    assert all(torch.equal(base[k], new[k]) for k in frozen_keys)
    assert all(not torch.equal(base[k], new[k]) for k in trained_keys)
    # the generator is never frozen
    assert not same_state(state(pipe, "generator"), state(adapted, "generator"))
    assert adapted.card_info["adaptation"]["freeze_discriminator_blocks"] == n


def test_freeze_blocks_zero_trains_every_discriminator_layer():
    pipe = tiny_pipeline()
    adapted = pipe.adapt(random_shots(), num_steps=2, freeze_discriminator_blocks=0, generator=seeded(0))
    base, new = state(pipe, "discriminator"), state(adapted, "discriminator")
    assert all(not torch.equal(base[k], new[k]) for k in base)


def test_default_freezes_the_input_convolution_and_the_lowest_discriminator_block():
    pipe = tiny_pipeline()
    adapted = pipe.adapt(random_shots(), num_steps=2, generator=seeded(0))
    base, new = state(pipe, "discriminator"), state(adapted, "discriminator")
    assert adapted.card_info["adaptation"]["freeze_discriminator_blocks"] == 1
    assert all(torch.equal(base[k], new[k]) == k.startswith(("conv_in.", "blocks.0.")) for k in base)


# ------------------------------------------------------------------------------------------- record, card, callback


def test_adaptation_record_and_model_card(tmp_path):
    from huggingface_hub import ModelCard

    pipe = tiny_pipeline()
    pipe.card_info["name_or_path"] = "org/base"
    adapted = pipe.adapt(
        random_shots(6), num_steps=4, learning_rate=1e-3, batch_size=4, r1_gamma=0.5, generator=seeded(7)
    )
    record = adapted.card_info["adaptation"]
    assert adapted.card_info["base_model"] == "org/base" and record["base_model"] == "org/base"
    assert record["shots"] == 6 and record["num_steps"] == 4 and record["steps_run"] == 4 and record["seed"] == 7
    assert record["wall_time_s"] > 0 and not record["stopped_early"]
    assert record["learning_rate"] == 1e-3 and record["batch_size"] == 4 and record["r1_gamma"] == 0.5
    assert record["loss"] == "nonsaturating" and record["mixed_precision"] == "no"
    assert record["augment"] == ["translation", "cutout", "color"]
    assert record["lora_rank"] is None and record["freeze_discriminator_blocks"] == 1
    assert [row["step"] for row in record["losses"]] == [0, 1, 2, 3]
    assert all(math.isfinite(row["d_loss"]) and math.isfinite(row["g_loss"]) for row in record["losses"])
    assert record["final_g_loss"] == record["losses"][-1]["g_loss"]

    adapted.save_pretrained(tmp_path / "adapted")
    readme = (tmp_path / "adapted" / "README.md").read_text(encoding="utf-8")
    front_matter = readme.split("---")[1]
    assert "base_model: org/base" in front_matter
    assert ModelCard.load(tmp_path / "adapted" / "README.md").data.base_model == "org/base"
    assert "| shots | 6 |" in readme and "| num_steps | 4 |" in readme
    saved = json.loads((tmp_path / "adapted" / "metagan_hub.json").read_text(encoding="utf-8"))
    assert len(saved["adaptation"]["losses"]) == 4
    reloaded = MetaGANPipeline.from_pretrained(tmp_path / "adapted")
    assert reloaded.card_info["adaptation"]["seed"] == 7

    # augment given as a comma-separated string, or None, is recorded as a list of policy names
    one = pipe.adapt(random_shots(), num_steps=1, augment="color, cutout", generator=seeded(0))
    assert one.card_info["adaptation"]["augment"] == ["color", "cutout"]
    none = pipe.adapt(random_shots(), num_steps=1, augment=None, generator=seeded(0))
    assert none.card_info["adaptation"]["augment"] == []


def test_mode_seeking_term_reaches_the_generator_loss_and_the_record(monkeypatch, tmp_path):
    seen = []
    real_loss = adaptation.gan_step.__globals__["generator_loss"]

    def spy(*args, **kwargs):
        seen.append(kwargs["mode_seeking_weight"])
        return real_loss(*args, **kwargs)

    monkeypatch.setitem(adaptation.gan_step.__globals__, "generator_loss", spy)
    pipe = tiny_pipeline()
    plain = pipe.adapt(random_shots(), num_steps=3, generator=seeded(0))
    assert seen == [0.0] * 3 and plain.card_info["adaptation"]["mode_seeking_weight"] == 0.0
    seen.clear()
    ms = pipe.adapt(random_shots(), num_steps=3, mode_seeking_weight=1.0, generator=seeded(0))
    assert seen == [1.0] * 3
    assert all("ms_loss" in row for row in ms.card_info["adaptation"]["losses"])
    # the same seed with the term on trains other weights
    assert not same_state(state(plain, "generator"), state(ms, "generator"))
    ms.save_pretrained(tmp_path / "ms")
    reloaded = MetaGANPipeline.from_pretrained(tmp_path / "ms")
    assert reloaded.card_info["adaptation"]["mode_seeking_weight"] == 1.0
    assert "| mode_seeking_weight | 1 |" in (tmp_path / "ms" / "README.md").read_text(encoding="utf-8")


def test_copy_repulsion_reaches_the_generator_loss_and_the_record(monkeypatch, tmp_path):
    import metagan_hub.pipelines.copy_filter as copy_filter

    calls = []
    real_term = copy_filter.near_copy_repulsion

    def spy(discriminator, images, references, *args, **kwargs):
        calls.append((discriminator, images.shape, images.requires_grad, references))
        return real_term(discriminator, images, references, *args, **kwargs)

    monkeypatch.setattr(copy_filter, "near_copy_repulsion", spy)
    pipe = tiny_pipeline()
    shots = samples(pipe, n=5)  # the generator's own samples: others fall within the shots' spacing
    plain = pipe.adapt(shots, num_steps=3, generator=seeded(0))
    assert calls == [] and plain.card_info["adaptation"]["copy_repulsion_weight"] == 0.0
    assert all("copy_repulsion" not in row for row in plain.card_info["adaptation"]["losses"])
    repelled = pipe.adapt(shots, num_steps=3, copy_repulsion_weight=2.0, generator=seeded(0))
    assert len(calls) == 3
    disc, shape, requires_grad, references = calls[0]
    assert type(disc).__name__ == "MetaGANDiscriminator" and shape == (4, 1, SIZE, SIZE) and requires_grad
    torch.testing.assert_close(references, shots)  # the shots, as adapt() loaded them
    rows = repelled.card_info["adaptation"]["losses"]
    assert all(0 <= row["copy_repulsion"] <= 1 and 0 <= row["near_copy_fraction"] <= 1 for row in rows)
    assert rows[0]["copy_repulsion"] > 0  # near-copies at the first step: the term pushed
    assert not same_state(state(plain, "generator"), state(repelled, "generator"))
    repelled.save_pretrained(tmp_path / "repelled")
    reloaded = MetaGANPipeline.from_pretrained(tmp_path / "repelled")
    assert reloaded.card_info["adaptation"]["copy_repulsion_weight"] == 2.0
    assert "| copy_repulsion_weight | 2 |" in (tmp_path / "repelled" / "README.md").read_text(encoding="utf-8")


def test_shot_reconstruction_pulls_the_anchor_images_to_the_shots_and_reaches_the_record(monkeypatch, tmp_path):
    from metagan_hub.training import diversity

    chosen = []
    real_anchors = diversity.shot_anchor_latents

    def spy(model, shots, generator, *args, **kwargs):
        latents = real_anchors(model, shots, generator, *args, **kwargs)
        chosen.append(latents.clone())
        return latents

    monkeypatch.setattr(adaptation, "shot_anchor_latents", spy)
    pipe = tiny_pipeline()
    before = hashes(pipe)
    shots = random_shots(n=5)
    plain = pipe.adapt(shots, num_steps=6, generator=seeded(0))
    assert chosen == [] and plain.card_info["adaptation"]["shot_reconstruction_weight"] == 0.0
    assert all("shot_reconstruction" not in row for row in plain.card_info["adaptation"]["losses"])
    anchored = pipe.adapt(shots, num_steps=6, shot_reconstruction_weight=30.0, generator=seeded(0))
    assert hashes(pipe) == before  # the starting weights are untouched
    (anchors,) = chosen
    assert anchors.shape == (5, pipe.generator.config.latent_dim) and anchors.unique(dim=0).shape[0] == 5
    rows = anchored.card_info["adaptation"]["losses"]
    assert len(rows) == 6 and all(row["shot_reconstruction"] > 0 for row in rows)

    def anchor_error(p: MetaGANPipeline) -> float:  # the shots as the generator draws them at their latents
        p.generator.set_tone_curve(None)
        with torch.no_grad():
            return float((p.generator(anchors).sample - shots).abs().mean())

    # the same GAN steps and random draws, plus the term: the anchors' images moved towards their shots
    assert anchor_error(anchored) < anchor_error(plain) - 0.01
    anchored.save_pretrained(tmp_path / "anchored")
    reloaded = MetaGANPipeline.from_pretrained(tmp_path / "anchored")
    assert reloaded.card_info["adaptation"]["shot_reconstruction_weight"] == 30.0
    assert "| shot_reconstruction_weight | 30 |" in (tmp_path / "anchored" / "README.md").read_text(encoding="utf-8")


def test_shot_anchor_latents_give_each_shot_its_nearest_free_draw():
    from metagan_hub.training.diversity import shot_anchor_latents

    model = MetaGANGenerator(latent_dim=8, sample_size=16, block_out_channels=(8, 8)).eval()
    candidates = torch.randn(64, 8, generator=seeded(3))  # the draws shot_anchor_latents makes from seed 3
    with torch.no_grad():
        images = model(candidates).sample
    # shots 0 and 1 both sit exactly on draw 10's image; shot 2 on draw 40's
    shots = images[[10, 10, 40]].clone()
    anchors = shot_anchor_latents(model, shots, seeded(3), num_candidates=64)
    assert torch.equal(anchors[2], candidates[40])
    assert torch.equal(anchors[0], candidates[10]) != torch.equal(anchors[1], candidates[10])  # one draw, one shot
    other = 1 if torch.equal(anchors[0], candidates[10]) else 0
    distances = (images - shots[other]).flatten(1).norm(dim=1)
    distances[10] = math.inf
    assert torch.equal(anchors[other], candidates[int(distances.argmin())])  # the next nearest free draw


def test_shot_reconstruction_with_copy_repulsion_repels_only_the_update_batch(monkeypatch):
    # the recipe that takes back the copies shot reconstruction adds: the repulsion judges the update's own samples,
    # never the shot latents' images, which are meant to draw the shots
    import metagan_hub.pipelines.copy_filter as copy_filter

    shapes = []
    real_term = copy_filter.near_copy_repulsion

    def spy(discriminator, images, references, *args, **kwargs):
        shapes.append(tuple(images.shape))
        return real_term(discriminator, images, references, *args, **kwargs)

    monkeypatch.setattr(copy_filter, "near_copy_repulsion", spy)
    pipe = tiny_pipeline()
    shots = samples(pipe, n=5)
    both = pipe.adapt(
        shots, num_steps=3, shot_reconstruction_weight=10.0, copy_repulsion_weight=3.0, generator=seeded(0)
    )
    assert shapes == [(4, 1, SIZE, SIZE)] * 3  # batch_size images per update, not batch_size + 5 shot latents
    rows = both.card_info["adaptation"]["losses"]
    assert all("shot_reconstruction" in row and "copy_repulsion" in row for row in rows)
    record = both.card_info["adaptation"]
    assert record["shot_reconstruction_weight"] == 10.0 and record["copy_repulsion_weight"] == 3.0


def test_shot_reconstruction_term_covers_every_shot_in_windows():
    from metagan_hub.training.diversity import ShotReconstruction

    model = MetaGANGenerator(latent_dim=8, sample_size=16, block_out_channels=(8, 8)).eval()
    latents = torch.randn(5, 8, generator=seeded(4))
    with torch.no_grad():
        own = model(latents).sample
    loss, _ = ShotReconstruction(latents[:3], own[:3].clone(), weight=2.0).term(own[:3])
    assert float(loss) == 0.0  # the generator draws the shots: nothing to pull
    shots = torch.zeros(5, 1, 16, 16)
    shots[3:] = 1.0
    term = ShotReconstruction(latents, shots, weight=2.0, batch_size=3)
    windows = []
    for _ in range(2):
        z = term.latents()
        windows.append([int(next(i for i in range(5) if torch.equal(latents[i], row))) for row in z])
        images = model(z).sample
        loss, logs = term.term(images)
        index = windows[-1]
        torch.testing.assert_close(loss, 2.0 * (images - shots[index]).abs().mean())
        assert logs["shot_reconstruction"] == pytest.approx(float(loss.detach()) / 2.0)
        assert loss.requires_grad
    assert windows == [[0, 1, 2], [3, 4, 0]]  # the window moves on and wraps around


def test_shot_augment_varies_the_real_batch_and_reaches_the_record(monkeypatch, tmp_path):
    reals = []
    real_step = adaptation.gan_step

    def spy(gen, disc, opt_g, opt_d, real, *args, **kwargs):
        reals.append(real.clone())
        return real_step(gen, disc, opt_g, opt_d, real, *args, **kwargs)

    monkeypatch.setattr(adaptation, "gan_step", spy)
    pipe, shots = tiny_pipeline(), random_shots()
    plain = pipe.adapt(shots, num_steps=3, generator=seeded(0))
    # off (the default): every real image is one of the shots, unchanged
    assert all(any(torch.equal(r, s) for s in shots) for batch in reals for r in batch)
    assert plain.card_info["adaptation"]["shot_augment"] == 0.0
    reals.clear()
    varied = pipe.adapt(shots, num_steps=3, shot_augment=1.0, generator=seeded(0))
    assert not any(torch.equal(r, s) for batch in reals for r in batch for s in shots)
    assert all(batch.shape == (4, *shots.shape[1:]) and batch.abs().max() <= 1 for batch in reals)
    assert not same_state(state(plain, "generator"), state(varied, "generator"))
    again = pipe.adapt(shots, num_steps=3, shot_augment=1.0, generator=seeded(0))
    assert same_state(state(varied, "generator"), state(again, "generator"))  # seeded: reproducible
    varied.save_pretrained(tmp_path / "sa")
    reloaded = MetaGANPipeline.from_pretrained(tmp_path / "sa")
    assert reloaded.card_info["adaptation"]["shot_augment"] == 1.0
    assert "| shot_augment | 1 |" in (tmp_path / "sa" / "README.md").read_text(encoding="utf-8")


def test_lr_scheduler_sets_every_steps_rate_of_both_networks_and_reaches_the_record(monkeypatch, tmp_path):
    rates = []
    real_step = adaptation.gan_step

    def spy(gen, disc, opt_g, opt_d, *args, **kwargs):
        rates.append(({g["lr"] for g in opt_g.param_groups}, {g["lr"] for g in opt_d.param_groups}))
        return real_step(gen, disc, opt_g, opt_d, *args, **kwargs)

    monkeypatch.setattr(adaptation, "gan_step", spy)
    pipe, shots, lr, n = tiny_pipeline(), random_shots(), 1e-3, 6
    logged = []
    plain = pipe.adapt(shots, num_steps=n, learning_rate=lr, generator=seeded(0))
    assert rates == [({lr}, {lr})] * n  # the default: constant
    assert [row["lr"] for row in plain.card_info["adaptation"]["losses"]] == [lr] * n
    rates.clear()
    cosine = pipe.adapt(
        shots,
        num_steps=n,
        learning_rate=lr,
        lr_scheduler="cosine",
        lr_warmup_steps=2,
        generator=seeded(0),
        callback=lambda step, logs: logged.append(logs["lr"]),
    )
    # linear warm-up from 0 over 2 steps, then half a cosine period down to 0 at step n
    expected = [0.0, lr / 2] + [lr * 0.5 * (1 + math.cos(math.pi * (i - 2) / (n - 2))) for i in range(2, n)]
    for (g_rates, d_rates), want in zip(rates, expected, strict=True):
        assert g_rates == d_rates and len(g_rates) == 1
        assert math.isclose(g_rates.pop(), want, rel_tol=1e-9, abs_tol=1e-15)
    assert logged == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert not same_state(state(plain, "generator"), state(cosine, "generator"))
    record = cosine.card_info["adaptation"]
    assert (record["lr_scheduler"], record["lr_warmup_steps"]) == ("cosine", 2)
    assert (plain.card_info["adaptation"]["lr_scheduler"], plain.card_info["adaptation"]["lr_warmup_steps"]) == (
        "constant",
        0,
    )
    cosine.save_pretrained(tmp_path / "cos")
    reloaded = MetaGANPipeline.from_pretrained(tmp_path / "cos")
    assert reloaded.card_info["adaptation"]["lr_scheduler"] == "cosine"
    assert "| lr_scheduler | cosine |" in (tmp_path / "cos" / "README.md").read_text(encoding="utf-8")


def test_local_base_path_is_not_written_as_hub_base_model(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "base")
    base = MetaGANPipeline.from_pretrained(tmp_path / "base")
    base.set_progress_bar_config(disable=True)
    adapted = base.adapt(random_shots(), num_steps=1, generator=seeded(0))
    assert adapted.card_info["adaptation"]["base_model"] == str(tmp_path / "base")
    adapted.save_pretrained(tmp_path / "adapted")
    front_matter = (tmp_path / "adapted" / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert "base_model" not in front_matter


def test_callback_observes_every_step_and_can_stop_early():
    pipe = tiny_pipeline()
    seen = []

    def callback(step, logs):
        seen.append((step, dict(logs)))
        return True if step == 2 else None

    adapted = pipe.adapt(random_shots(), num_steps=10, callback=callback, generator=seeded(0))
    assert [s for s, _ in seen] == [0, 1, 2]
    assert all({"d_loss", "g_loss"} <= logs.keys() and logs["step"] == s for s, logs in seen)
    record = adapted.card_info["adaptation"]
    assert record["stopped_early"] and record["steps_run"] == 3 and len(record["losses"]) == 3
    assert record["num_steps"] == 10

    # a callback returning something other than True (e.g. 1, "yes") does not stop
    adapted = pipe.adapt(random_shots(), num_steps=3, callback=lambda step, logs: 1, generator=seeded(0))
    assert adapted.card_info["adaptation"]["steps_run"] == 3


# --------------------------------------------------------------------------------------------------------- bad input


def _write_folder(tmp_path, name: str, files: dict[str, bytes | Image.Image]):
    folder = tmp_path / name
    folder.mkdir()
    for fname, content in files.items():
        if isinstance(content, Image.Image):
            content.save(folder / fname)
        else:
            (folder / fname).write_bytes(content)
    return folder


def _good_image() -> Image.Image:
    return Image.new("L", (SIZE, SIZE), 128)


BAD_INPUTS = {
    "no_images": (lambda tmp: {"images": []}, r"`images`.*empty"),
    "empty_folder": (lambda tmp: {"images": _write_folder(tmp, "empty", {"notes.txt": b"x"})}, r"`images`.*no image"),
    "unreadable_file": (
        lambda tmp: {"images": _write_folder(tmp, "bad", {"a.png": _good_image(), "broken.png": b"not a png"})},
        r"broken\.png",
    ),
    "one_pixel_image": (lambda tmp: {"images": [_good_image(), Image.new("L", (1, 1))]}, r"1x1"),
    "unsupported_mode": (lambda tmp: {"images": [Image.new("F", (SIZE, SIZE))]}, r"mode 'F'"),
    "nan_tensor": (
        lambda tmp: {"images": random_shots().index_fill(0, torch.tensor([2]), math.nan)},
        r"`images`.*NaN",
    ),
    "inf_tensor": (lambda tmp: {"images": random_shots().index_fill(0, torch.tensor([0]), math.inf)}, r"`images`"),
    "out_of_range_tensor": (lambda tmp: {"images": random_shots() * 127.5 + 127.5}, r"`images`.*\[-1, 1\]"),
    "num_steps_0": (lambda tmp: {"num_steps": 0}, r"`num_steps`"),
    "learning_rate_0": (lambda tmp: {"learning_rate": 0}, r"`learning_rate`"),
    "learning_rate_negative": (lambda tmp: {"learning_rate": -1.0}, r"`learning_rate`"),
    "learning_rate_nan": (lambda tmp: {"learning_rate": math.nan}, r"`learning_rate`"),
    "batch_size_0": (lambda tmp: {"batch_size": 0}, r"`batch_size`"),
    "unknown_augment": (lambda tmp: {"augment": ("translation", "zoom")}, r"`augment`.*'zoom'"),
    "freeze_beyond_depth": (lambda tmp: {"freeze_discriminator_blocks": 3}, r"`freeze_discriminator_blocks`.*2"),
    "freeze_negative": (lambda tmp: {"freeze_discriminator_blocks": -1}, r"`freeze_discriminator_blocks`"),
    "fp16_on_cpu": (lambda tmp: {"mixed_precision": "fp16"}, r"mixed_precision='fp16'.*CPU.*bf16"),
    "unknown_precision": (lambda tmp: {"mixed_precision": "fp8"}, r"`mixed_precision`"),
    "unknown_loss": (lambda tmp: {"loss": "lsgan"}, r"`loss`.*'lsgan'"),
    "negative_r1": (lambda tmp: {"r1_gamma": -0.1}, r"`r1_gamma`"),
    "r1_interval_0": (lambda tmp: {"r1_interval": 0}, r"`r1_interval`.*0"),
    "r1_interval_float": (lambda tmp: {"r1_interval": 2.5}, r"`r1_interval`.*2\.5"),
    "ema_decay_one": (lambda tmp: {"ema_decay": 1.0}, r"`ema_decay`"),
    "lora_rank_0": (lambda tmp: {"lora_rank": 0}, r"`lora_rank`"),
    "mode_seeking_negative": (lambda tmp: {"mode_seeking_weight": -1.0}, r"`mode_seeking_weight`.*-1\.0"),
    "mode_seeking_nan": (lambda tmp: {"mode_seeking_weight": math.nan}, r"`mode_seeking_weight`.*nan"),
    "mode_seeking_inf": (lambda tmp: {"mode_seeking_weight": math.inf}, r"`mode_seeking_weight`.*inf"),
    "mode_seeking_bool": (lambda tmp: {"mode_seeking_weight": True}, r"`mode_seeking_weight`.*True"),
    "copy_repulsion_negative": (lambda tmp: {"copy_repulsion_weight": -1.0}, r"`copy_repulsion_weight`.*-1\.0"),
    "copy_repulsion_nan": (lambda tmp: {"copy_repulsion_weight": math.nan}, r"`copy_repulsion_weight`.*nan"),
    "copy_repulsion_inf": (lambda tmp: {"copy_repulsion_weight": math.inf}, r"`copy_repulsion_weight`.*inf"),
    "copy_repulsion_bool": (lambda tmp: {"copy_repulsion_weight": True}, r"`copy_repulsion_weight`.*True"),
    "copy_repulsion_margin_0": (lambda tmp: {"copy_repulsion_margin": 0.0}, r"`copy_repulsion_margin`.*0\.0"),
    "copy_repulsion_one_image": (
        lambda tmp: {"copy_repulsion_weight": 1.0, "images": random_shots(n=1)},
        r"copy_repulsion_weight=1\.0.*at least 2 images, got 1",
    ),
    "shot_reconstruction_negative": (
        lambda tmp: {"shot_reconstruction_weight": -1.0},
        r"`shot_reconstruction_weight`.*-1\.0",
    ),
    "shot_reconstruction_nan": (
        lambda tmp: {"shot_reconstruction_weight": math.nan},
        r"`shot_reconstruction_weight`.*nan",
    ),
    "shot_reconstruction_inf": (
        lambda tmp: {"shot_reconstruction_weight": math.inf},
        r"`shot_reconstruction_weight`.*inf",
    ),
    "shot_reconstruction_bool": (
        lambda tmp: {"shot_reconstruction_weight": True},
        r"`shot_reconstruction_weight`.*True",
    ),
    "shot_augment_negative": (lambda tmp: {"shot_augment": -0.5}, r"`shot_augment`.*between 0 \(off\) and 3.*-0\.5"),
    "shot_augment_too_strong": (lambda tmp: {"shot_augment": 4.0}, r"`shot_augment`.*4\.0"),
    "shot_augment_nan": (lambda tmp: {"shot_augment": math.nan}, r"`shot_augment`.*nan"),
    "shot_augment_bool": (lambda tmp: {"shot_augment": True}, r"`shot_augment`.*True"),
    "unknown_lr_scheduler": (lambda tmp: {"lr_scheduler": "cos"}, r"`lr_scheduler`.*'cosine'.*'cos'"),
    "piecewise_lr_scheduler": (lambda tmp: {"lr_scheduler": "piecewise_constant"}, r"`lr_scheduler`"),
    "warmup_negative": (lambda tmp: {"lr_scheduler": "linear", "lr_warmup_steps": -1}, r"`lr_warmup_steps`.*-1"),
    "warmup_whole_run": (lambda tmp: {"lr_scheduler": "linear", "lr_warmup_steps": 2}, r"`lr_warmup_steps`.*1.*2"),
    "warmup_float": (lambda tmp: {"lr_scheduler": "linear", "lr_warmup_steps": 1.0}, r"`lr_warmup_steps`.*1\.0"),
    "warmup_with_constant": (lambda tmp: {"lr_warmup_steps": 1}, r"`lr_warmup_steps=1`.*constant_with_warmup"),
    "mode_seeking_one_sample": (
        lambda tmp: {"mode_seeking_weight": 1.0, "batch_size": 1},
        r"mode_seeking_weight=1\.0.*`batch_size`.*>= 2, got 1",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_value_error_naming_it(case, tmp_path, monkeypatch):
    make_kwargs, match = BAD_INPUTS[case]
    # nothing may be trained before the check: a training step would fail this test
    monkeypatch.setattr(adaptation, "gan_step", lambda *a, **k: pytest.fail("trained before rejecting bad input"))
    kwargs = {"images": random_shots(), "num_steps": 2, **make_kwargs(tmp_path)}
    images = kwargs.pop("images")
    with pytest.raises(ValueError, match=match):
        tiny_pipeline().adapt(images, **kwargs)


def test_pipeline_without_discriminator_is_rejected():
    pipe = MetaGANPipeline(generator=MetaGANGenerator(latent_dim=8, sample_size=SIZE, block_out_channels=(16, 8)))
    with pytest.raises(ValueError, match="discriminator"):
        pipe.adapt(random_shots(), num_steps=1)


# ------------------------------------------------------------------------------------------------- non-finite losses


def _nan_discriminator_loss(monkeypatch, nan_calls: int | None = None) -> list[int]:
    """Make the discriminator loss NaN for the first `nan_calls` steps (all steps when None); returns a call log."""
    original = gan_step_module.discriminator_loss
    calls = []

    def fake(*args, **kwargs):
        loss, logs = original(*args, **kwargs)
        calls.append(len(calls))
        if nan_calls is None or len(calls) <= nan_calls:
            loss = loss * math.nan
            logs = {**logs, "d_loss": math.nan}
        return loss, logs

    monkeypatch.setattr(gan_step_module, "discriminator_loss", fake)
    return calls


def test_non_finite_steps_are_skipped_and_logged(monkeypatch, caplog):
    pipe = tiny_pipeline()
    calls = _nan_discriminator_loss(monkeypatch)  # every step
    with caplog.at_level(logging.WARNING, logger=adaptation.__name__):
        adapted = pipe.adapt(random_shots(), num_steps=4, generator=seeded(0), tone_match=False)  # weights only
    assert len(calls) == 4
    record = adapted.card_info["adaptation"]
    assert record["skipped_nonfinite_steps"] == 4 and all(math.isnan(row["d_loss"]) for row in record["losses"])
    assert sum("non-finite loss" in r.getMessage() for r in caplog.records) == 4
    # skipped steps apply no update at all, to either network
    for name in ("generator", "discriminator"):
        assert same_state(state(adapted, name), state(pipe, name))


def test_training_resumes_after_a_few_non_finite_steps(monkeypatch):
    pipe = tiny_pipeline()
    _nan_discriminator_loss(monkeypatch, nan_calls=2)
    adapted = pipe.adapt(random_shots(), num_steps=4, generator=seeded(0))
    record = adapted.card_info["adaptation"]
    assert record["skipped_nonfinite_steps"] == 2 and record["steps_run"] == 4
    assert math.isfinite(record["final_d_loss"])
    assert not same_state(state(adapted, "generator"), state(pipe, "generator"))
    assert all(torch.isfinite(t).all() for t in adapted.generator.state_dict().values())


def test_too_many_non_finite_steps_in_a_row_raise(monkeypatch):
    pipe = tiny_pipeline()
    before = hashes(pipe)
    calls = _nan_discriminator_loss(monkeypatch)
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        adapt_pipeline(pipe, random_shots(), num_steps=50, max_nonfinite_steps=3, generator=seeded(0))
    assert len(calls) == 3
    assert hashes(pipe) == before
    assert all(torch.isfinite(t).all() for m in (pipe.generator, pipe.discriminator) for t in m.state_dict().values())
    with pytest.raises(NonFiniteLossError, match="10 steps in a row"):  # the default bound of pipe.adapt()
        pipe.adapt(random_shots(), num_steps=50, generator=seeded(0))
    assert len(calls) == 13


def test_non_finite_weights_are_never_returned(monkeypatch):
    pipe = tiny_pipeline()
    before = hashes(pipe)

    def poisoning_step(generator_model, *args, **kwargs):
        with torch.no_grad():
            next(generator_model.parameters()).fill_(math.inf)
        return True, {"d_loss": 0.0, "g_loss": 0.0}

    monkeypatch.setattr(adaptation, "gan_step", poisoning_step)
    with pytest.raises(NonFiniteLossError, match="non-finite weights"):
        pipe.adapt(random_shots(), num_steps=2, generator=seeded(0))
    assert hashes(pipe) == before


@pytest.mark.parametrize("interval", [1, 3])
def test_lazy_r1_runs_the_penalty_every_interval_steps_scaled_by_it(interval, monkeypatch):
    seen: list[float] = []
    original = gan_step_module.discriminator_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["r1_gamma"])
        return original(*args, **kwargs)

    monkeypatch.setattr(gan_step_module, "discriminator_loss", spy)
    adapted = tiny_pipeline().adapt(
        random_shots(), num_steps=7, r1_gamma=0.2, r1_interval=interval, generator=seeded(0)
    )
    expected = [0.2 * interval if step % interval == 0 else 0.0 for step in range(7)]
    assert seen == pytest.approx(expected)
    assert adapted.card_info["adaptation"]["r1_interval"] == interval
    r1_logged = [row["r1"] for row in adapted.card_info["adaptation"]["losses"]]
    assert all(v == 0.0 for step, v in enumerate(r1_logged) if step % interval)
    assert all(v > 0.0 for step, v in enumerate(r1_logged) if step % interval == 0)


def test_adapted_weights_are_contiguous_and_in_the_base_dtype(tmp_path):
    adapted = tiny_pipeline().adapt(random_shots(), num_steps=2, generator=seeded(0))
    for model in (adapted.generator, adapted.discriminator):
        for name, tensor in model.state_dict().items():
            assert tensor.is_contiguous(), name
            assert tensor.dtype == torch.float32, name
    adapted.save_pretrained(tmp_path / "adapted")  # safetensors refuses non-contiguous tensors
    reloaded = MetaGANPipeline.from_pretrained(tmp_path / "adapted")
    assert same_state(state(adapted, "generator"), state(reloaded, "generator"))


@pytest.mark.parametrize("interval", [0, -2, 1.5, True])
def test_gan_step_config_rejects_bad_r1_interval(interval):
    with pytest.raises(ValueError, match="`r1_interval`"):
        gan_step_module.GANStepConfig(r1_interval=interval)


def test_adapted_pipeline_does_not_inherit_the_base_title_evaluation_or_training_record():
    pipe = tiny_pipeline()
    pipe.card_info = {
        "title": "base",
        "summary": "A meta-checkpoint.",
        "data_notes": "Meta-trained on renders (CC BY-SA).",
        "evaluation": "| x | 1 |",
        "training": {"algorithm": "reptile"},
    }
    adapted = pipe.adapt(random_shots(), num_steps=2, generator=seeded(0))
    assert "evaluation" not in adapted.card_info and "training" not in adapted.card_info
    assert "title" not in adapted.card_info  # the card then takes the repo name, or "Adapted Meta-GAN"
    assert adapted.card_info["data_notes"] == "Meta-trained on renders (CC BY-SA)."  # the start's licence applies
    assert adapted.card_info["summary"] == (
        "Adapted with `MetaGANPipeline.adapt()` to 5 images in 2 steps. The checkpoint it started from: "
        "A meta-checkpoint."
    )
    # adapted again: the summary describes the last adaptation only, it does not nest
    again = adapted.adapt(random_shots(3), num_steps=1, generator=seeded(0))
    assert again.card_info["summary"] == "Adapted with `MetaGANPipeline.adapt()` to 3 images in 1 step."


def test_bf16_trains_a_bf16_compute_copy_and_returns_the_float32_master_weights(monkeypatch):
    seen = []
    original = adaptation.gan_step

    def spy(generator_model, discriminator_model, opt_g, opt_d, *args, **kwargs):
        seen.append((generator_model.dtype, discriminator_model.dtype, type(opt_g).__name__))
        return original(generator_model, discriminator_model, opt_g, opt_d, *args, **kwargs)

    monkeypatch.setattr(adaptation, "gan_step", spy)
    pipe = tiny_pipeline()
    base = state(pipe, "discriminator")
    adapted = pipe.adapt(
        random_shots(), num_steps=3, mixed_precision="bf16", freeze_discriminator_blocks=1, generator=seeded(0)
    )
    assert seen == [(torch.bfloat16, torch.bfloat16, "MasterWeightsOptimizer")] * 3
    new = state(adapted, "discriminator")
    # frozen layers are returned bit-identical (never rounded to bf16), trained ones keep float32 precision
    frozen = [k for k in base if k.startswith(("conv_in.", "blocks.0."))]
    assert frozen and all(torch.equal(base[k], new[k]) for k in frozen)
    gen = state(adapted, "generator")
    assert all(v.dtype == torch.float32 for v in gen.values())
    assert any(not torch.equal(v, v.to(torch.bfloat16).float()) for v in gen.values())
    assert same_state(state(pipe, "discriminator"), base)


def test_snapshots_match_the_returned_generator_and_do_not_change_training():
    """Snapshots at 0 and after the last step equal the start and the returned weights; taking them changes nothing."""
    pipe = tiny_pipeline()
    shots = square_shot().repeat(3, 1, 1, 1)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def keep(steps_done: int, gen: torch.nn.Module) -> None:
        assert not gen.training and not any(p.requires_grad for p in gen.parameters())
        seen[steps_done] = {k: v.clone() for k, v in gen.state_dict().items()}

    kwargs = dict(num_steps=4, generator=None)
    with_snaps = pipe.adapt(
        shots,
        **{**kwargs, "generator": torch.Generator().manual_seed(0)},
        snapshot_steps=[0, 2, 4],
        snapshot_callback=keep,
    )
    plain = pipe.adapt(shots, **{**kwargs, "generator": torch.Generator().manual_seed(0)})
    assert sorted(seen) == [0, 2, 4]
    for k, v in pipe.generator.state_dict().items():
        assert torch.equal(seen[0][k], v)  # bitwise: a copy of the same tensors, no computation in between
    for k, v in with_snaps.generator.state_dict().items():
        assert torch.equal(seen[4][k], v)
        assert torch.equal(plain.generator.state_dict()[k], v)  # same object's computation repeated: promised exact
    assert not all(torch.equal(seen[2][k], seen[4][k]) for k in seen[2])
    assert with_snaps.card_info["adaptation"]["snapshot_steps"] == [0, 2, 4]


@pytest.mark.parametrize(
    ("steps", "callback", "error", "match"),
    [
        ([0, 5], lambda s, g: None, ValueError, "snapshot_steps"),
        ([-1], lambda s, g: None, ValueError, "snapshot_steps"),
        ([1], None, TypeError, "snapshot_callback"),
        (None, lambda s, g: None, ValueError, "snapshot_callback"),
    ],
)
def test_snapshot_arguments_are_checked(steps, callback, error, match):
    with pytest.raises(error, match=match):
        tiny_pipeline().adapt(square_shot(), num_steps=4, snapshot_steps=steps, snapshot_callback=callback)
