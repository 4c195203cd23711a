# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""The yardstick on validation classes: `DatasetSplitDomain` (an evaluation domain over any dataset's classes) and
`evaluate_adaptation` (adapt as users would, judge in classifier features)."""

from __future__ import annotations

import pytest
import torch

from metagan_hub.data import get_dataset
from metagan_hub.data.base import ArrayClassDataset, ClassSubset
from metagan_hub.metrics import ClassifierRecipe
from metagan_hub.metrics.classifiers import classifier_cache_key
from metagan_hub.metrics.domains import DatasetSplitDomain
from metagan_hub.metrics.yardstick import SCORE_METRICS, YARDSTICK_METRICS, evaluate_adaptation, selection_key
from metagan_hub.training.adaptation import NonFiniteLossError
from tests.testing_utils import tiny_pipeline

QUICK = ClassifierRecipe(num_epochs=1, block_out_channels=(8, 16))


@pytest.fixture(scope="module")
def val_classes():
    _, val, _ = get_dataset("digits", resolution=16).split_classes(num_val=3, num_test=2, seed=0)
    return val


@pytest.fixture()
def domain(val_classes):
    d = DatasetSplitDomain(val_classes, shot_pool=5)
    d.classifier_recipe = QUICK
    return d


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r.flatten().tolist()) for r in x}


# ---------------------------------------------------------------------------------------------------- the domain


def test_split_domain_keeps_shots_real_and_classifier_images_apart(domain, val_classes):
    assert domain.classes == val_classes.class_names
    images, labels = domain.classifier_training_data()
    for c in range(domain.num_classes):
        pool, real = domain.shot_pool_uint8(c), domain.real_uint8(c)
        train = images[labels == domain.classifier_label(c)]
        assert pool.shape[0] == 5
        assert real.shape[0] == (len(_rows(val_classes.class_images_uint8(c))) - 5) // 2
        assert train.shape[0] >= 1
        assert not _rows(pool) & _rows(real) and not _rows(pool) & _rows(train) and not _rows(real) & _rows(train)
    # deterministic: a second domain over the same data splits the same way
    again = DatasetSplitDomain(val_classes, shot_pool=5)
    assert torch.equal(again.real_uint8(1), domain.real_uint8(1))
    assert torch.equal(again.shots(2, k=3, seed=4), domain.shots(2, k=3, seed=4))


def test_split_domain_cache_key_follows_the_images_not_only_the_names(val_classes):
    domain = DatasetSplitDomain(val_classes, shot_pool=5)
    images = torch.cat([val_classes.class_images_uint8(c) for c in range(3)])
    offsets = [0]
    for c in range(3):
        offsets.append(offsets[-1] + val_classes.num_images(c))
    names = val_classes.class_names
    same = ArrayClassDataset(images, offsets=offsets, class_names=names, resolution=16, channels=1)
    changed = ArrayClassDataset(255 - images, offsets=offsets, class_names=names, resolution=16, channels=1)
    assert classifier_cache_key(DatasetSplitDomain(same, shot_pool=5)) == classifier_cache_key(domain)
    assert classifier_cache_key(DatasetSplitDomain(changed, shot_pool=5)) != classifier_cache_key(domain)


def test_confusers_only_train_the_classifier(val_classes):
    train, _, _ = get_dataset("digits", resolution=16).split_classes(num_val=3, num_test=2, seed=0)
    plain = DatasetSplitDomain(val_classes, shot_pool=5)
    domain = DatasetSplitDomain(val_classes, shot_pool=5, confusers=train)
    assert domain.classes == plain.classes and domain.num_classes == 3
    assert domain.classifier_classes == plain.classes + [f"confuser:{n}" for n in train.class_names]
    images, labels = domain.classifier_training_data()
    base_images, base_labels = plain.classifier_training_data()
    assert torch.equal(images[: len(base_images)], base_images) and torch.equal(
        labels[: len(base_labels)], base_labels
    )
    for j in range(train.num_classes):
        assert torch.equal(images[labels == 3 + j], train.class_images_uint8(j))
    assert classifier_cache_key(domain) != classifier_cache_key(plain)
    with pytest.raises(ValueError, match="`confusers` must have the dataset's resolution"):
        DatasetSplitDomain(val_classes, confusers=get_dataset("digits", resolution=8))


def test_split_domain_bad_input_names_the_problem(val_classes):
    with pytest.raises(ValueError, match="at most the dataset's 3 classes"):
        DatasetSplitDomain(val_classes, num_classes=4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        DatasetSplitDomain(val_classes, num_classes=1)
    with pytest.raises(ValueError, match="`shot_pool` must be"):
        DatasetSplitDomain(val_classes, shot_pool=0)
    few = ArrayClassDataset(
        torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)),
        offsets=[0, 8, 12],
        class_names=["a", "b"],
        resolution=16,
        channels=1,
    )
    with pytest.raises(ValueError, match=r"class 'b' has 4 distinct images; a shot pool of 5"):
        DatasetSplitDomain(few, shot_pool=5)


def test_split_domain_of_a_class_subset_caches_where_the_viewed_dataset_does(val_classes, tmp_path):
    parent = ArrayClassDataset(
        torch.cat([val_classes.class_images_uint8(c) for c in range(3)]),
        offsets=[0, *torch.tensor([val_classes.num_images(c) for c in range(3)]).cumsum(0).tolist()],
        class_names=val_classes.class_names,
        resolution=16,
        channels=1,
    )
    parent.cache_dir = tmp_path / "data_cache"
    assert DatasetSplitDomain(ClassSubset(parent, [0, 2])).cache_dir == tmp_path / "data_cache"
    explicit = DatasetSplitDomain(ClassSubset(parent, [0, 2]), cache_dir=tmp_path / "other")
    assert explicit.cache_dir == tmp_path / "other"


# ---------------------------------------------------------------------------------------------------- evaluation


def test_evaluate_adaptation_is_reproducible_and_leaves_the_pipeline_untouched(domain):
    pipe = tiny_pipeline()
    before = {k: v.clone() for k, v in pipe.generator.state_dict().items()}
    first = evaluate_adaptation(pipe, domain, num_classes=2, shots=3, num_steps=3, num_samples=12, seed=5)
    second = evaluate_adaptation(pipe, domain, num_classes=2, shots=3, num_steps=3, num_samples=12, seed=5)
    assert all(torch.equal(before[k], v) for k, v in pipe.generator.state_dict().items())
    assert first["per_class"] == second["per_class"] and first["score"] == second["score"]
    assert list(first["per_class"]) == domain.classes[:2]
    assert set(first["means"]) == set(YARDSTICK_METRICS)
    for m in YARDSTICK_METRICS:
        values = [v[m] for v in first["per_class"].values()]
        assert first["means"][m] == pytest.approx(sum(values) / 2)
    assert first["score"] == pytest.approx(sum(first["means"][m] for m in SCORE_METRICS))
    assert (first["num_classes"], first["shots"], first["adapt_steps"], first["samples_per_class"]) == (2, 3, 3, 12)
    assert first["failed"] == []


def test_evaluate_adaptation_scores_real_images_as_the_ceiling(domain):
    """A pipeline whose 'adaptation' returns the class's own real images scores near the top; one returning another
    class's images scores low: the score can tell a good generator from a bad one."""

    class Replay:
        def __init__(self, source):
            self.source = source

        def adapt(self, shots, **kwargs):
            match = next(c for c in range(domain.num_classes) if torch.equal(domain.shots(c, k=len(shots)), shots))
            return _Fixed(domain.real(self.source(match)))

    class _Fixed:
        def __init__(self, images):
            self.images = images

        def __call__(self, batch_size, generator, output_type):
            idx = torch.randint(0, self.images.shape[0], (batch_size,), generator=generator)
            return type("Out", (), {"images": (self.images[idx] + 1) / 2})()

    domain.classifier_recipe = ClassifierRecipe(num_epochs=4, block_out_channels=(8, 16))
    good = evaluate_adaptation(Replay(lambda c: c), domain, shots=5, num_steps=1, num_samples=40)
    wrong = evaluate_adaptation(Replay(lambda c: (c + 1) % 3), domain, shots=5, num_steps=1, num_samples=40)
    assert good["means"]["recognisability"] == pytest.approx(domain.real_accuracy, abs=0.15)
    assert good["means"]["recall"] > 0.8 and wrong["means"]["recall"] < good["means"]["recall"] - 0.5
    assert wrong["means"]["recognisability"] < good["means"]["recognisability"] - 0.3
    assert good["score"] > wrong["score"] + 0.6


def test_a_failed_adaptation_counts_as_zero(domain):
    pipe = tiny_pipeline()

    class Failing:
        def adapt(self, shots, **kwargs):
            raise NonFiniteLossError("adapt() stopped: 10 steps in a row had NaN/inf losses")

    out = evaluate_adaptation(Failing(), domain, num_classes=2, num_steps=1, num_samples=8)
    assert out["failed"] == domain.classes[:2] and out["score"] == 0.0
    ok = evaluate_adaptation(pipe, domain, num_classes=2, shots=3, num_steps=2, num_samples=8)
    assert ok["failed"] == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 4}, "at most the domain's 3 classes"),
        ({"num_classes": 0}, "`num_classes` must be a positive integer"),
        ({"num_steps": 0}, "`num_steps` must be a positive integer"),
        ({"num_samples": 3}, "`num_samples` must be at least 4"),
        ({"shots": True}, "`shots` must be a positive integer"),
    ],
)
def test_evaluate_adaptation_bad_input(domain, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate_adaptation(tiny_pipeline(), domain, **kwargs)


def test_evaluate_adaptation_checks_every_class_before_training_anything():
    """12 images per class and a shot pool of 5 leave 3 real held-out images: too few for k-NN precision (k=3), which
    must be refused up front, not after the classifier is trained and the first class adapted."""
    images = torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = ArrayClassDataset(images, offsets=[0, 12, 24], class_names=["a", "b"], resolution=16, channels=1)
    small = DatasetSplitDomain(data, shot_pool=5)
    with pytest.raises(
        ValueError, match=r"class 'a' of the 'validation' domain has 3 real held-out images; .* at least 4"
    ):
        evaluate_adaptation(tiny_pipeline(), small, num_steps=1, num_samples=8)
    with pytest.raises(ValueError, match=r"has a shot pool of 5 images, fewer than `shots`=6"):
        evaluate_adaptation(tiny_pipeline(), DatasetSplitDomain(data, shot_pool=5, num_real=4), shots=6)
    assert small._classifier is None  # nothing was trained


def _result(recognisability, recall):
    return {"score": recognisability + recall, "means": {"recognisability": recognisability, "recall": recall}}


def test_selection_key_orders_by_score_or_by_recall_above_a_recognisability_floor():
    faithful, varied, blurry = _result(0.9, 0.1), _result(0.5, 0.6), _result(0.7, 0.0)
    assert max([faithful, varied, blurry], key=selection_key) is varied
    floor = lambda r: selection_key(r, min_recognisability=0.6)  # noqa: E731
    assert sorted([faithful, varied, blurry], key=floor) == [varied, blurry, faithful]  # below the floor: by fidelity
    assert floor(_result(0.6, 0.2)) > floor(faithful)  # at the floor counts as reaching it
    assert selection_key(_result(float("nan"), 0.5)) < selection_key(blurry)  # a broken result ranks last
    assert selection_key({"score": 1.0, "means": {}}) < selection_key(blurry)


@pytest.mark.parametrize("floor", [-0.1, 1.5, True, "0.5"])
def test_selection_key_refuses_a_bad_floor(floor):
    with pytest.raises(ValueError, match="`min_recognisability` must be"):
        selection_key(_result(0.5, 0.5), min_recognisability=floor)
