"""`adapt(..., copy_stop=...)`: adaptation stops when the generator's monitor samples become near-copies of the shots
(in the copy encoder's features) and returns the generator of the check before (never one of fewer than
`copy_stop_min_steps` steps); otherwise nothing changes. The near-copy distance is a number or measured on the shots
("augment")."""

import pytest
import torch

from metagan_hub.pipelines.copy_filter import augmented_shot_distance, encoder_features, near_copy_share
from tests.pipelines.test_copy_encoder import with_encoder
from tests.pipelines.test_pipeline_metagan import SIZE, assert_same_weights, make_pipe

SHOTS = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
OPTIONS = dict(num_steps=8, tone_match=False, copy_stop_interval=2, copy_stop_min_steps=0)


def adapt(pipe, snapshots=None, **kwargs):
    kwargs = {**OPTIONS, **kwargs}
    if snapshots is not None:
        kwargs.update(snapshot_steps=range(kwargs["num_steps"] + 1), snapshot_callback=snapshots.__setitem__)
    return pipe.adapt(SHOTS, generator=torch.Generator().manual_seed(0), **kwargs)


def test_near_copy_share():
    encoder = with_encoder().copy_encoder
    refs = encoder_features(encoder, SHOTS)
    others = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert near_copy_share(encoder, torch.cat([SHOTS, others]), refs, 1e-4) == 0.5
    assert near_copy_share(encoder, others, refs, 3.0) == 1.0  # unit-length features are at most 2 apart


def test_a_stop_returns_the_generator_of_the_check_before():
    pipe = with_encoder()
    snapshots = {}
    # every monitor sample is nearer than 3 (unit-length features): the second check (step 4) stops
    adapted = adapt(pipe, snapshots, copy_stop=0.5, copy_stop_distance=3.0)
    record = adapted.card_info["adaptation"]
    assert record["copy_stop_step"] == 2 and record["steps_run"] == 4
    assert record["copy_checks"] == [{"step": 2, "share": 1.0}, {"step": 4, "share": 1.0}]
    assert_same_weights(adapted.generator, snapshots[2])  # the generator after 2 steps, not 4
    assert not adapted.generator.training and "in 2 steps" in adapted.card_info["summary"]
    assert sorted(snapshots) == [0, 1, 2, 3, 4]  # and no step ran after the stop


def test_without_a_stop_nothing_changes():
    pipe = with_encoder()
    plain = adapt(pipe)
    # a distance no sample is nearer than: checked every 2 steps, never stops, the same weights bit for bit
    checked = adapt(pipe, copy_stop=0.5, copy_stop_distance=1e-6)
    record = checked.card_info["adaptation"]
    assert record["copy_stop_step"] is None and record["steps_run"] == 8
    assert [c["step"] for c in record["copy_checks"]] == [2, 4, 6, 8]
    assert_same_weights(plain.generator, checked.generator)
    assert_same_weights(plain.discriminator, checked.discriminator)
    assert "copy_checks" not in plain.card_info["adaptation"] and plain.card_info["adaptation"]["copy_stop"] is None


def test_a_stop_never_returns_fewer_steps_than_copy_stop_min_steps():
    pipe = with_encoder()
    snapshots = {}
    # every check is over the share, but the checks at steps 2 and 4 would return fewer than 4 steps: step 6 stops
    adapted = adapt(pipe, snapshots, copy_stop=0.5, copy_stop_distance=3.0, copy_stop_min_steps=4)
    record = adapted.card_info["adaptation"]
    assert record["copy_stop_step"] == 4 and record["steps_run"] == 6 and record["copy_stop_min_steps"] == 4
    assert [c["step"] for c in record["copy_checks"]] == [2, 4, 6]
    assert_same_weights(adapted.generator, snapshots[4])


@pytest.mark.parametrize(
    "options, checks, first_stop",
    [
        # checks at 2, 4, 6, 8 would return at most 6 steps, fewer than 7
        (dict(copy_stop_min_steps=7), [2, 4, 6, 8], 10),
        # one check (at 5): nothing before it to return
        (dict(copy_stop_interval=5), [5], 10),
    ],
)
def test_a_run_too_short_for_any_stop_only_records_its_checks(caplog, options, checks, first_stop):
    pipe = with_encoder()
    plain = adapt(pipe)
    # every check is over the share, but none can stop, and a warning says so
    with caplog.at_level("WARNING", logger="metagan_hub.training.adaptation"):
        checked = adapt(pipe, copy_stop=0.5, copy_stop_distance=3.0, **options)
    assert "copy_stop=0.5 cannot stop in num_steps=8" in caplog.text
    assert f"the first check that could stop is at step {first_stop}" in caplog.text
    record = checked.card_info["adaptation"]
    assert record["copy_stop_step"] is None and record["steps_run"] == 8
    assert [c["step"] for c in record["copy_checks"]] == checks
    assert_same_weights(plain.generator, checked.generator)


def test_no_warning_where_a_stop_is_possible(caplog):
    with caplog.at_level("WARNING", logger="metagan_hub.training.adaptation"):
        adapt(with_encoder(), copy_stop=0.5, copy_stop_distance=1e-6, copy_stop_min_steps=6)  # check 8 could stop
    assert "cannot stop" not in caplog.text


def test_augmented_shot_distance():
    encoder = with_encoder().copy_encoder
    same = augmented_shot_distance(encoder, SHOTS, torch.Generator().manual_seed(0))
    assert same == augmented_shot_distance(encoder, SHOTS, torch.Generator().manual_seed(0))  # seeded
    assert 0 < same < 2
    assert augmented_shot_distance(encoder, SHOTS, strength=0.0) == 0.0  # unchanged shots lie on their features
    # stronger distortions move further from the shots
    assert augmented_shot_distance(encoder, SHOTS, torch.Generator().manual_seed(0), strength=4.0) > same


def test_the_augment_distance_is_measured_on_the_shots_and_recorded():
    pipe = with_encoder()
    adapted = adapt(pipe, copy_stop=0.5)  # the default distance
    record = adapted.card_info["adaptation"]
    assert record["copy_stop_distance"] == "augment"
    # from its own seed (adapt's seed + 3), in a float32 copy of the encoder
    expected = augmented_shot_distance(pipe.copy_encoder.float(), SHOTS, torch.Generator().manual_seed(3))
    assert record["copy_stop_distance_value"] == round(expected, 6)
    # the checks judged at that distance: the same shares as a number equal to it gives
    fixed = adapt(pipe, copy_stop=0.5, copy_stop_distance=expected).card_info["adaptation"]
    assert record["copy_checks"] == fixed["copy_checks"] and "copy_stop_distance_value" not in fixed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(copy_stop=0), "`copy_stop` must be None"),
        (dict(copy_stop=1.0), "`copy_stop` must be None"),
        (dict(copy_stop=True), "`copy_stop` must be None"),
        (dict(copy_stop=float("nan")), "`copy_stop` must be None"),
        (dict(copy_stop=0.2, copy_stop_interval=0), "copy_stop_interval"),
        (dict(copy_stop=0.2, copy_stop_distance=-1.0), "copy_stop_distance"),
        (dict(copy_stop=0.2, copy_stop_distance="aug"), "`copy_stop_distance` must be a positive number or one of"),
        (dict(copy_stop=0.2, copy_stop_min_steps=-1), "`copy_stop_min_steps` must be a non-negative integer"),
        (dict(copy_stop=0.2, copy_stop_min_steps=True), "`copy_stop_min_steps` must be a non-negative integer"),
        (dict(copy_stop=0.2, copy_stop_min_steps=2.0), "`copy_stop_min_steps` must be a non-negative integer"),
    ],
)
def test_bad_copy_stop_options_are_refused_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        adapt(with_encoder(), **kwargs)


def test_copy_stop_needs_a_copy_encoder():
    with pytest.raises(ValueError, match="copy_stop=0.2 judges near-copies in the pipeline's copy encoder"):
        adapt(make_pipe(), copy_stop=0.2)
