import hashlib

import pytest
import torch

from metagan_hub.data import KanjiVGDataset, find_system_fonts
from metagan_hub.metrics import EVALUATION_DOMAINS, get_evaluation_domain
from metagan_hub.metrics.domains import KANJI_SHOT_RENDER_SEED

CJK_FONTS = find_system_fonts("ja")
needs_cjk = pytest.mark.skipif(not CJK_FONTS, reason="no Japanese fonts installed (see metagan_hub.data.fonts)")


def digests(images: torch.Tensor) -> set[bytes]:
    return {hashlib.blake2b(images[i].numpy().tobytes(), digest_size=16).digest() for i in range(images.shape[0])}


def check_disjoint(domain, classes) -> None:
    """Shot pool, real held-out images and classifier-training images share no image (compared byte for byte)."""
    train_images, train_labels = domain.classifier_training_data()
    for c in classes:
        pool, real = digests(domain.shot_pool_uint8(c)), digests(domain.real_uint8(c))
        train = digests(train_images[train_labels == domain.classifier_label(c)])
        assert pool and len(real) >= 2 and train
        assert not pool & real and not pool & train and not real & train
        all_shots = domain.shots(c, k=domain.shot_pool_size(c), seed=0)
        assert digests(((all_shots + 1) * 127.5).round().to(torch.uint8)) == pool


def test_digits_domain_shapes_and_disjoint_splits():
    domain = get_evaluation_domain("digits")
    assert domain.name == "digits" and domain.num_classes == 10 and domain.classes[0] == "0"
    assert "digits" in domain.description
    assert domain.classifier_classes == domain.classes
    check_disjoint(domain, range(10))
    shots, real = domain.shots(4, k=5, seed=0), domain.real(4)
    assert shots.shape == (5, 1, 32, 32) and shots.dtype == torch.float32
    assert real.shape == (60, 1, 32, 32) and -1 <= float(real.min()) and float(real.max()) <= 1
    assert domain.shot_pool_size(4) == 20


def test_shots_are_deterministic_per_seed():
    domain = get_evaluation_domain("digits", resolution=16, channels=3)
    a, b = domain.shots(2, k=5, seed=7), domain.shots(2, k=5, seed=7)
    assert a.shape == (5, 3, 16, 16)
    assert torch.equal(a, b)  # same seed, same images (index selection: exact)
    assert not torch.equal(a, domain.shots(2, k=5, seed=8))
    assert torch.equal(domain.shots(2, k=3, seed=0), domain.shots(2, k=20, seed=0)[:3])
    # seed 0 takes the first k images of the pool
    pool = domain.shot_pool_uint8(2)
    assert torch.equal(domain.shots(2, k=4, seed=0), pool[:4].float() / 127.5 - 1)


def test_domain_errors():
    with pytest.raises(ValueError, match="unknown evaluation domain 'omniglot'"):
        get_evaluation_domain("omniglot")
    assert set(EVALUATION_DOMAINS) == {"kanji", "fonts", "digits"}
    domain = get_evaluation_domain("digits", resolution=16)
    with pytest.raises(ValueError, match=r"`class_index` must be an integer in \[0, 10\)"):
        domain.shots(10, k=1, seed=0)
    with pytest.raises(ValueError, match="class_index"):
        domain.real(-1)
    with pytest.raises(ValueError, match=r"`k`=21 is larger than the shot pool .* \(20 images\)"):
        domain.shots(0, k=21, seed=0)
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        domain.shots(0, k=0, seed=0)
    with pytest.raises(ValueError, match="`seed`"):
        domain.shots(0, k=1, seed=-1)
    with pytest.raises(ValueError, match="`resolution` must be at least 8"):
        get_evaluation_domain("digits", resolution=4)
    with pytest.raises(ValueError, match="`channels` must be one of"):
        get_evaluation_domain("digits", channels=2)
    with pytest.raises(ValueError, match="`num_classes` must be at most 10"):
        get_evaluation_domain("digits", num_classes=11)
    with pytest.raises(ValueError, match=r"must have shape \[N, 1, 16, 16\] to match the 'digits' evaluation domain"):
        domain.check_images(torch.zeros(2, 1, 32, 32), "samples")
    domain.check_images(torch.zeros(2, 1, 16, 16))


def test_kanji_domain_uses_the_meta_training_split_and_renders(tmp_path):
    domain = get_evaluation_domain("kanji", cache_dir=tmp_path, num_classes=3, num_real=4, num_confuser_classes=2)
    full = KanjiVGDataset(resolution=32, samples_per_class=20, seed=0, cache_dir=tmp_path)
    train, _, test = full.split_classes(seed=0)
    assert domain.classes == test.class_names[:3]
    assert domain.classifier_classes[:3] == domain.classes
    assert len(domain.classifier_classes) == 5 and set(domain.classifier_classes[3:]) <= set(train.class_names)
    assert [domain.classifier_label(c) for c in range(3)] == [0, 1, 2]
    # the shots are the renders evaluate_metagan.py takes: render seed 0, 20 per class, first k
    other = KanjiVGDataset(
        resolution=32,
        samples_per_class=20,
        seed=KANJI_SHOT_RENDER_SEED,
        characters=domain.classes[1] + "永",
        cache_dir=tmp_path,
    )
    index = other.class_names.index(domain.classes[1])
    torch.testing.assert_close(domain.shots(1, k=5, seed=0), other.class_images(index)[:5], rtol=0, atol=0)
    assert domain.shot_pool_size(1) == 20 and domain.real(1).shape == (4, 1, 32, 32)
    check_disjoint(domain, range(3))
    with pytest.raises(ValueError, match="larger than the shot pool"):
        domain.shots(0, k=21, seed=0)


@needs_cjk
def test_fonts_domain_splits_faces(tmp_path):
    try:
        domain = get_evaluation_domain("fonts", cache_dir=tmp_path, num_classes=4, min_faces=4)
        classes = domain.classes
    except ValueError as err:  # too few distinct faces installed: the error says how many are needed
        assert "min_faces=4" in str(err)
        return
    assert 2 <= len(classes) <= 4 and "font glyphs" in domain.description
    check_disjoint(domain, range(len(classes)))
    assert torch.equal(domain.shots(0, k=1, seed=3), domain.shots(0, k=1, seed=3))


@needs_cjk
def test_fonts_domain_error_names_the_faces_it_needs(tmp_path):
    with pytest.raises(ValueError, match="needs CJK font faces that draw at least min_faces=100000"):
        _ = get_evaluation_domain("fonts", cache_dir=tmp_path, num_classes=2, min_faces=100_000).classes
    with pytest.raises(ValueError, match="`min_faces` must be an integer >= 4"):
        get_evaluation_domain("fonts", cache_dir=tmp_path, min_faces=3)
