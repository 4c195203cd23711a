"""The pipeline's near-copy filter (`avoid_copies_of`, `copy_margin`) and its helpers."""

import logging
import math

import numpy as np
import pytest
import torch

from metagan_hub.pipelines.copy_filter import (
    COPY_CAP_FRACTION,
    COPY_CAP_MIN_BATCH,
    COPY_FILTER_CHUNK,
    COPY_GATE_FRACTION,
    NearCopyDistance,
    capped_copy_threshold,
    copy_threshold_of_references,
    discriminator_features,
    gate_features,
    near_copy_repulsion,
    nearest_reference_distance,
    replacement_round_size,
)
from tests.pipelines.test_pipeline_metagan import LATENT_DIM, make_pipe

N = 12


@pytest.fixture(scope="module")
def pipe():
    return make_pipe()


def latents(seed: int = 3, n: int = N) -> torch.Tensor:
    return torch.randn(n, LATENT_DIM, generator=torch.Generator().manual_seed(seed))


def plain(pipe, z: torch.Tensor) -> torch.Tensor:
    return pipe(batch_size=z.shape[0], latents=z, output_type="pt").images * 2 - 1  # [N, C, H, W] in [-1, 1]


def test_threshold_and_distances():
    refs = torch.tensor([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0]])
    # nearest other reference: 3, 3, 4 -> median 3
    assert copy_threshold_of_references(refs) == pytest.approx(3.0)
    assert copy_threshold_of_references(refs, copy_margin=0.5) == pytest.approx(1.5)
    d = nearest_reference_distance(torch.tensor([[0.0, 1.0], [3.0, 5.0]]), refs)
    torch.testing.assert_close(d, torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="at least 2"):
        copy_threshold_of_references(refs[:1])
    with pytest.raises(ValueError, match="copy_margin"):
        copy_threshold_of_references(refs, copy_margin=0)


def test_discriminator_features_do_not_depend_on_the_batch(pipe):
    images = plain(pipe, latents())
    whole = discriminator_features(pipe.discriminator, images)
    # the first of the 16x16 test model's two down blocks (16 channels, 8x8), pooled over 2x2 cells: 16 x 4 x 4
    assert whole.shape == (N, 16 * 4 * 4)
    torch.testing.assert_close(whole.norm(dim=1), torch.ones(N))
    torch.testing.assert_close(discriminator_features(pipe.discriminator, images, chunk_size=5), whole)
    torch.testing.assert_close(discriminator_features(pipe.discriminator, images[3:4]), whole[3:4])


def test_discriminator_features_are_the_pooled_block_output_and_run_only_up_to_it(pipe):
    disc = pipe.discriminator
    images = plain(pipe, latents())
    with torch.no_grad():
        block = disc(images, return_features=True).features[-2]  # [N, 16, 8, 8]
    pooled = torch.nn.functional.avg_pool2d(block, 2).flatten(1)
    expected = pooled / pooled.norm(dim=1, keepdim=True)
    torch.testing.assert_close(discriminator_features(disc, images), expected)
    torch.testing.assert_close(discriminator_features(disc, images, block=0), expected)  # -2 of 2 blocks is block 0
    ran = []
    hooks = [b.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, b in enumerate(disc.blocks)]
    try:
        discriminator_features(disc, images)
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == [0]  # the last block and the head are skipped
    for bad in (2, -3, 1.0, True):
        with pytest.raises(ValueError, match="`block` must be an integer between -2 and 1"):
            discriminator_features(disc, images, block=bad)


def test_gate_features_are_the_pooled_unit_length_input_features(pipe):
    disc = pipe.discriminator
    images = plain(pipe, latents())
    with torch.no_grad():
        pooled = torch.nn.functional.avg_pool2d(disc.input_features(images), 4).flatten(1)  # [N, 8 * 4 * 4]
    torch.testing.assert_close(gate_features(disc, images), pooled / pooled.norm(dim=1, keepdim=True))
    torch.testing.assert_close(gate_features(disc, images, chunk_size=5), gate_features(disc, images))


def gated_by_hand(disc, images, references):
    """The gate's cut, and which images of a batch of 20 or more go through it, computed from the definitions."""
    gate_distance = nearest_reference_distance(gate_features(disc, images), gate_features(disc, references))
    cut = float(gate_distance.quantile(COPY_GATE_FRACTION))
    return cut, gate_distance <= cut


def test_small_batches_all_go_through_the_gate(pipe):
    disc = pipe.discriminator
    images, references = plain(pipe, latents()), plain(pipe, latents(seed=4, n=3))
    near = NearCopyDistance(disc, references)
    distance = near(images, set_gate=True)  # N = 12 < COPY_CAP_MIN_BATCH: no cut
    expected = nearest_reference_distance(
        discriminator_features(disc, images), discriminator_features(disc, references)
    )
    torch.testing.assert_close(distance, expected)
    assert near.gate == float("inf") and near.discriminator_passes == N
    assert near.threshold(2.0) == pytest.approx(copy_threshold_of_references(near.reference_features, 2.0))


def test_in_a_large_batch_only_the_images_nearest_in_the_gate_features_go_through(pipe):
    disc = pipe.discriminator
    n = 50
    images, references = plain(pipe, latents(seed=6, n=n)), plain(pipe, latents(seed=4, n=3))
    near = NearCopyDistance(disc, references, chunk_size=7)
    ran = []
    hook = disc.blocks[0].register_forward_hook(lambda _, args, __: ran.append(args[0].shape[0]))
    try:
        distance = near(images, set_gate=True)
    finally:
        hook.remove()
    cut, through = gated_by_hand(disc, images, references)
    assert near.gate == pytest.approx(cut)
    assert 0 < int(through.sum()) <= COPY_GATE_FRACTION * n
    assert sum(ran) == int(through.sum()) == near.discriminator_passes  # the blocks saw only those
    assert max(ran) <= 7  # in chunks of at most chunk_size, and by default of at most COPY_FILTER_CHUNK
    assert NearCopyDistance(disc, references).chunk_size == COPY_FILTER_CHUNK < 64
    full = nearest_reference_distance(discriminator_features(disc, images), discriminator_features(disc, references))
    torch.testing.assert_close(distance[through], full[through])
    assert distance[~through].isinf().all()
    # later calls keep the first batch's cut, whatever their own spread
    later = plain(pipe, latents(seed=8, n=30))
    again = near(later)
    assert near.gate == pytest.approx(cut)
    later_through = nearest_reference_distance(gate_features(disc, later), gate_features(disc, references)) <= cut
    assert near.discriminator_passes == int(through.sum()) + int(later_through.sum())
    assert again[~later_through].isinf().all() and again[later_through].isfinite().all()


def test_exact_copies_are_replaced_and_the_rest_kept(pipe):
    z = latents()
    before = plain(pipe, z)
    references = before[:3].clone()  # samples 0-2 are exact copies of the references
    # a small margin: the random test model's samples are all alike, so only the exact copies count
    kwargs = dict(batch_size=N, latents=z, avoid_copies_of=references, copy_margin=1e-3)
    after = pipe(**kwargs, generator=torch.Generator().manual_seed(0), output_type="pt").images * 2 - 1
    # the copies are gone, every other sample is untouched
    assert not torch.isclose(after[:3], before[:3], atol=1e-4).flatten(1).all(dim=1).any()
    torch.testing.assert_close(after[3:], before[3:], rtol=0, atol=1e-6)
    # no output sample is a near-copy under the filter's own rule
    features = discriminator_features(pipe.discriminator, references)
    threshold = copy_threshold_of_references(features, copy_margin=1e-3)
    distance = nearest_reference_distance(discriminator_features(pipe.discriminator, after), features)
    assert (distance >= threshold).all()
    # deterministic given the generator
    again = pipe(**kwargs, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in again.images])) / 255,
        (after / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).squeeze(-1),
        rtol=0,
        atol=1 / 255 + 1e-6,
    )


def test_replacements_are_counted_and_drawn_at_the_latent_scale(pipe):
    z = latents() * 1.5
    references = plain(pipe, z)[:2]
    images, stats = pipe.replace_near_copies(z, references, 1.0, 1.5, torch.Generator().manual_seed(0))
    assert stats["near_copies"] >= 2 and stats["replaced"] + stats["kept_copies"] == stats["near_copies"]
    assert stats["extra_draws"] >= stats["replaced"] and stats["threshold"] > 0
    assert stats["discriminator_passes"] == N + stats["extra_draws"]  # small batches: no gate
    # the replacements are the generator's images of the next draws from the generator, times the scale
    g = torch.Generator().manual_seed(0)
    candidates = plain(pipe, 1.5 * torch.randn(stats["extra_draws"], LATENT_DIM, generator=g))
    for i in range(2):
        assert torch.isclose(images[i : i + 1], candidates, atol=1e-5).flatten(1).all(dim=1).any()


def test_the_filters_generator_passes_run_in_even_chunks(pipe):
    z = latents(n=7)
    references = plain(pipe, z)[:2]
    sizes = []
    hook = pipe.generator.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    try:
        _, stats = pipe.replace_near_copies(z, references, 1.0, 1.0, torch.Generator().manual_seed(0), chunk_size=3)
    finally:
        hook.remove()
    assert sizes[:3] == [3, 2, 2]  # the batch: the fewest chunks of at most 3, of even sizes (not 3, 3, 1)
    assert max(sizes) <= 3 and sum(sizes) == 7 + stats["extra_draws"]  # the replacement rounds likewise


def test_near_replacements_walk_from_the_near_copys_latent(pipe):
    z = latents() * 1.5
    before = plain(pipe, z)
    references = before[:3].clone()  # samples 0-2 are exact copies
    spread = 0.5
    images, stats = pipe.replace_near_copies(
        z, references, 1e-3, 1.5, torch.Generator().manual_seed(0), replacement_spread=spread
    )
    assert stats["near_copies"] == 3 and stats["replaced"] == 3 and stats["extra_draws"] == 3  # one try each
    torch.testing.assert_close(images[3:], before[3:], rtol=0, atol=1e-6)
    # by hand: one new draw per near-copy, in order, mixed into its latent (unscaled), then scaled
    noise = torch.randn(3, LATENT_DIM, generator=torch.Generator().manual_seed(0))
    expected = plain(pipe, ((z[:3] / 1.5) * math.sqrt(1 - spread**2) + spread * noise) * 1.5)
    torch.testing.assert_close(images[:3], expected, rtol=0, atol=1e-5)
    # the same through the pipeline call, and a spread of 1 is the default (new draws)
    kwargs = dict(batch_size=N, latents=latents(), latent_scale=1.5, avoid_copies_of=references, copy_margin=1e-3)
    kwargs["output_type"] = "pt"
    called = pipe(**kwargs, replacement_spread=spread, generator=torch.Generator().manual_seed(0)).images * 2 - 1
    torch.testing.assert_close(called, images, rtol=0, atol=1e-5)
    default = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    one = pipe(**kwargs, replacement_spread=1.0, generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(one, default, rtol=0, atol=0)


def test_a_rejected_near_try_becomes_the_next_start(pipe):
    z = latents()
    before = plain(pipe, z)
    # an enormous margin: every try is a near-copy, so every position walks until the budget is spent
    images, stats = pipe.replace_near_copies(
        z, before[:4], 1e6, 1.0, torch.Generator().manual_seed(0), replacement_spread=0.5
    )
    assert stats == {**stats, "near_copies": N, "replaced": 0, "kept_copies": N, "extra_draws": 3 * N}
    torch.testing.assert_close(images, before, rtol=0, atol=1e-6)  # nothing replaced: the originals are kept


def test_all_near_copies_are_kept_with_a_warning(pipe, caplog):
    z = latents()
    before = plain(pipe, z)
    with caplog.at_level(logging.WARNING, logger="metagan_hub.pipelines.pipeline_metagan"):
        images, stats = pipe.replace_near_copies(z, before[:4], 1e6, 1.0, torch.Generator().manual_seed(0))
    assert stats == {**stats, "near_copies": N, "replaced": 0, "kept_copies": N, "extra_draws": 3 * N}
    torch.testing.assert_close(images, before, rtol=0, atol=1e-6)
    assert "still near-copies" in caplog.text


def filtered_with_a_huge_margin(pipe, n: int, seed: int):
    """`n` samples, their first 4 as references, filtered at a margin so large that by the distance rule alone every
    sample would be a near-copy (so the cap decides): (samples before, references, samples after, filter stats)."""
    before = plain(pipe, latents(seed=seed, n=n))
    references = before[:4]
    images, stats = pipe.replace_near_copies(
        latents(seed=seed, n=n), references, 1e6, 1.0, torch.Generator().manual_seed(0)
    )
    return before, references, images, stats


def test_in_a_large_batch_at_most_a_fifth_are_near_copies_the_closest_ones(pipe):
    n = 40
    before, references, images, stats = filtered_with_a_huge_margin(pipe, n, seed=5)
    disc = pipe.discriminator
    features = discriminator_features(disc, references)
    distance = nearest_reference_distance(discriminator_features(disc, before), features)
    _, through = gated_by_hand(disc, before, references)
    distance[~through] = float("inf")  # images the gate does not let through count as far
    assert stats["threshold"] == pytest.approx(float(distance.quantile(COPY_CAP_FRACTION)), rel=1e-5)
    flagged = distance < stats["threshold"]
    assert stats["near_copies"] == int(flagged.sum()) <= COPY_CAP_FRACTION * n
    assert flagged[:4].all()  # the references themselves are the closest
    torch.testing.assert_close(images[~flagged], before[~flagged], rtol=0, atol=1e-6)  # the rest are kept
    # below COPY_CAP_MIN_BATCH images there is no cap (test_all_near_copies_are_kept_with_a_warning: all flagged)
    assert capped_copy_threshold(1e6, distance[: COPY_CAP_MIN_BATCH - 1]) == 1e6


def test_max_copy_share_sets_the_cap_and_the_gate(pipe):
    n = 60
    z = latents(seed=5, n=n)
    before = plain(pipe, z)
    references = before[:4]
    counts = {}
    for share in (0.2, 0.5):
        images, stats = pipe.replace_near_copies(
            z, references, 1e6, 1.0, torch.Generator().manual_seed(0), max_copy_share=share
        )
        near = NearCopyDistance(pipe.discriminator, references, gate_fraction=max(COPY_GATE_FRACTION, 2 * share))
        distance = near(before, set_gate=True)
        assert stats["threshold"] == pytest.approx(float(distance.quantile(share)), rel=1e-5)
        assert stats["near_copies"] == int((distance < stats["threshold"]).sum()) <= share * n
        counts[share] = stats["near_copies"]
        # the pipeline's call gives the same images
        called = pipe(
            batch_size=n,
            latents=z,
            avoid_copies_of=references,
            copy_margin=1e6,
            max_copy_share=share,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
        torch.testing.assert_close(called * 2 - 1, images, rtol=0, atol=1e-6)
    # half the batch behind a gate of all of it (twice the share): more than twice the default's count
    assert counts[0.2] == int(0.2 * n) and counts[0.5] > 2 * counts[0.2]
    # the default is the fifth of before
    default, _ = pipe.replace_near_copies(z, references, 1e6, 1.0, torch.Generator().manual_seed(0))
    fifth, _ = pipe.replace_near_copies(z, references, 1e6, 1.0, torch.Generator().manual_seed(0), max_copy_share=0.2)
    assert torch.equal(default, fifth) and COPY_CAP_FRACTION == 0.2
    distances = torch.rand(200, generator=torch.Generator().manual_seed(0))
    assert int((distances < capped_copy_threshold(1.0, distances, max_share=1 / 3)).sum()) == 67  # its quantile


def test_replacement_round_size():
    assert replacement_round_size(0, 160, 200) == 0
    # a fifth of the draws were near-copies: 40 left need 50 draws on average, and a margin so that one round does
    assert replacement_round_size(40, 160, 200) == 55
    assert replacement_round_size(1, 199, 200) == 2
    # more left, or a lower pass rate, draw more; nothing passed yet (a small batch of copies): many, but finite
    assert replacement_round_size(41, 160, 200) > 55 < replacement_round_size(40, 100, 200)
    assert 4 < replacement_round_size(4, 0, 4) < 100
    # the margin is what makes one round enough about 9 times in 10 (binomial draws at the pass rate of 0.8)
    draws = torch.rand(2000, 55, generator=torch.Generator().manual_seed(0)) < 0.8
    assert 0.85 < float((draws.sum(dim=1) >= 40).float().mean()) < 0.97


def test_a_replacement_round_is_sized_by_the_pass_rate_and_places_draws_in_order(pipe):
    n = 200
    before, references, images, stats = filtered_with_a_huge_margin(pipe, n, seed=6)
    copies = stats["near_copies"]
    assert copies == int(COPY_CAP_FRACTION * n) and stats["kept_copies"] == 0
    # one round replaced all of them (not as many draws as copies, then a small round for the rest)
    assert stats["extra_draws"] == replacement_round_size(copies, n - copies, n) > copies
    # the placed images are the first candidates that are no near-copies, in the order drawn, at the copies' places
    near = NearCopyDistance(pipe.discriminator, references)
    flagged = near(before, set_gate=True) < stats["threshold"]
    candidates = plain(pipe, torch.randn(stats["extra_draws"], LATENT_DIM, generator=torch.Generator().manual_seed(0)))
    passing = candidates[near(candidates) >= stats["threshold"]]
    torch.testing.assert_close(images[flagged], passing[:copies], rtol=0, atol=1e-5)
    torch.testing.assert_close(images[~flagged], before[~flagged], rtol=0, atol=1e-6)


def test_ties_at_the_cap_all_count():
    threshold = 1.0
    # no ties: the 20% quantile, as many samples below it as the cap allows
    distances = torch.rand(200, generator=torch.Generator().manual_seed(0))
    cap = capped_copy_threshold(threshold, distances)
    assert cap == pytest.approx(float(distances.quantile(COPY_CAP_FRACTION)))
    assert int((distances < cap).sum()) == 40
    # every sample at one distance (a collapsed generator's exact copies): all of them count, not none
    for n in (20, 30):
        same = torch.full((n,), 0.25)
        assert (same < capped_copy_threshold(threshold, same)).all()
    # ... unless the distance rule says they are no copies
    assert capped_copy_threshold(0.25, torch.full((30,), 0.25)) == 0.25


def test_a_collapsed_generator_has_its_exact_copies_replaced(pipe):
    n = 25
    z = latents(n=1).repeat(n, 1)  # one latent 25 times: 25 identical images
    before = plain(pipe, z)
    references = torch.cat([before[:1], plain(pipe, latents(seed=11, n=2))])  # the image is one of them
    images, stats = pipe.replace_near_copies(z, references, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert stats["near_copies"] == n and stats["discriminator_passes"] >= n  # the gate let all ties through
    assert stats["replaced"] == n and stats["kept_copies"] == 0
    assert not torch.isclose(images, before[:1], atol=1e-4).flatten(1).all(dim=1).any()


def test_every_output_type(pipe):
    references = plain(pipe, latents(seed=9, n=3))
    kwargs = dict(batch_size=5, avoid_copies_of=references)
    pt = pipe(**kwargs, generator=torch.Generator().manual_seed(1), output_type="pt").images
    np_images = pipe(**kwargs, generator=torch.Generator().manual_seed(1), output_type="np").images
    pil = pipe(**kwargs, generator=torch.Generator().manual_seed(1)).images
    assert pt.shape == (5, 1, 16, 16) and np_images.shape == (5, 16, 16, 1) and len(pil) == 5
    torch.testing.assert_close(torch.from_numpy(np_images).permute(0, 3, 1, 2), pt)


BAD = [
    (dict(avoid_copies_of=torch.zeros(1, 1, 16, 16)), "at least 2"),
    (dict(avoid_copies_of=torch.zeros(3, 1, 16, 16), copy_margin=0), "copy_margin"),
    (dict(avoid_copies_of=torch.zeros(3, 1, 16, 16), copy_margin=-1.0), "copy_margin"),
    (dict(avoid_copies_of=torch.zeros(3, 1, 16, 16), copy_margin=float("nan")), "copy_margin"),
    (dict(avoid_copies_of=torch.zeros(3, 1, 16, 16), copy_margin=True), "copy_margin"),
    (dict(avoid_copies_of=torch.full((3, 1, 16, 16), 2.0)), r"avoid_copies_of.*\[-1, 1\]"),
    (dict(avoid_copies_of=torch.zeros(3, 1, 16, 16), generator=[torch.Generator()] * 2), "generator"),
    (dict(copy_margin=-1.0), "copy_margin"),  # checked even without avoid_copies_of
    (dict(replacement_spread=0.0), r"`replacement_spread` must be a number in \(0, 1\]"),
    (dict(replacement_spread=1.5), "replacement_spread"),
    (dict(replacement_spread=float("nan")), "replacement_spread"),
    (dict(replacement_spread=True), "replacement_spread"),
    (dict(max_copy_share=0.0), r"`max_copy_share` must be a number in \(0, 1\] .*got 0.0"),
    (dict(max_copy_share=1.5), "max_copy_share"),
    (dict(max_copy_share=float("nan")), "max_copy_share"),
    (dict(max_copy_share=True), "max_copy_share"),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_bad_filter_arguments_raise(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(batch_size=2, **kwargs)


def test_filter_needs_a_discriminator():
    pipe = make_pipe(discriminator=False)
    with pytest.raises(ValueError, match="avoid_copies_of.*discriminator"):
        pipe(batch_size=2, avoid_copies_of=torch.zeros(3, 1, 16, 16))


def test_near_copy_repulsion_is_the_hinge_on_the_filters_distance(pipe):
    disc = pipe.discriminator
    references = plain(pipe, latents(seed=5, n=5))
    images = torch.cat([references[:2], plain(pipe, latents(seed=6, n=6))]).requires_grad_(True)
    term, near = near_copy_repulsion(disc, images, references)
    # by hand, from the filter's own (no-gradient) features and threshold
    tau = copy_threshold_of_references(discriminator_features(disc, references))
    reference_features = discriminator_features(disc, references)
    distance = nearest_reference_distance(discriminator_features(disc, images.detach()), reference_features)
    torch.testing.assert_close(term.detach(), (torch.relu(tau - distance) / tau).mean())
    assert float(near) == pytest.approx(float((distance < tau).float().mean()))
    assert float(near) >= 2 / 8  # the two exact copies at least
    disc.zero_grad(set_to_none=True)
    term.backward()
    grad = images.grad.flatten(1).abs().sum(1)
    assert bool((grad[distance >= tau] == 0).all())  # images beyond the threshold are not pushed
    assert bool((grad[2:][distance[2:] < tau] > 0).all())  # nearer ones are (exact copies sit at a kink of the norm)
    # exact copies alone: the term's maximum
    copies, near = near_copy_repulsion(disc, references[:3], references)
    assert float(copies.detach()) == pytest.approx(1.0, abs=1e-5) and float(near) == 1.0


def test_near_copy_repulsion_of_repeated_references_is_zero(pipe):
    references = plain(pipe, latents(seed=5, n=1)).repeat(3, 1, 1, 1)  # the threshold is 0
    term, near = near_copy_repulsion(pipe.discriminator, plain(pipe, latents(seed=6, n=4)), references)
    assert float(term) == 0.0 and float(near) == 0.0


def test_near_copy_repulsion_moves_near_copies_away(pipe):
    disc = pipe.discriminator
    references = plain(pipe, latents(seed=5, n=5))
    noise = torch.randn(references[:3].shape, generator=torch.Generator().manual_seed(0))
    images = (references[:3] + 0.05 * noise).clamp(-1, 1).requires_grad_(True)  # near-copies of three references
    reference_features = discriminator_features(disc, references)

    def distance():
        return nearest_reference_distance(discriminator_features(disc, images.detach()), reference_features)

    before = distance()
    optimizer = torch.optim.SGD([images], lr=0.5)
    for _ in range(10):
        optimizer.zero_grad()
        near_copy_repulsion(disc, images, references)[0].backward()
        optimizer.step()
    assert bool((distance() > before).all())


def test_near_copy_repulsion_runs_only_the_near_copies_again_with_gradient(pipe):
    disc = pipe.discriminator
    references = plain(pipe, latents(seed=5, n=5))
    batches = []
    hook = disc.blocks[0].register_forward_hook(
        lambda module, args, out: batches.append((args[0].shape[0], torch.is_grad_enabled()))
    )
    try:
        images = torch.cat([references[:2], plain(pipe, latents(seed=6, n=6))]).requires_grad_(True)
        term, near = near_copy_repulsion(disc, images, references)
        assert batches == [(13, False), (round(float(near) * 8), True)]  # references + images, then the near ones
        batches.clear()
        repeated = references[:1].repeat(3, 1, 1, 1)  # threshold 0: nothing is near, no second pass, no graph
        term, near = near_copy_repulsion(disc, images, repeated)
        assert batches == [(11, False)] and not term.requires_grad
    finally:
        hook.remove()
