import pytest
import torch
from safetensors import safe_open

from metagan_hub.metrics import (
    ClassifierRecipe,
    EvaluationClassifier,
    fit_classifier,
    get_evaluation_domain,
    load_evaluation_classifier,
    train_evaluation_classifier,
)
from metagan_hub.metrics.classifiers import affine_jitter, check_classifier_matches, classifier_cache_path

TINY = ClassifierRecipe(num_epochs=4, batch_size=16, block_out_channels=(8, 16), learning_rate=1e-2)


def toy_data(n_per_class: int = 24, seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes: a dark horizontal bar, a dark vertical bar, a dark square, at random positions, on white."""
    g = torch.Generator().manual_seed(seed)
    images = torch.ones(3 * n_per_class, 1, size, size)
    labels = torch.arange(3).repeat_interleave(n_per_class)
    for i, label in enumerate(labels.tolist()):
        r, c = torch.randint(2, size - 8, (2,), generator=g).tolist()
        if label == 0:
            images[i, 0, r + 2 : r + 4, c : c + 7] = -1
        elif label == 1:
            images[i, 0, r : r + 7, c + 2 : c + 4] = -1
        else:
            images[i, 0, r : r + 5, c : c + 5] = -1
    return images, labels


def test_same_seed_gives_identical_state_dict_and_beats_chance():
    images, labels = toy_data()
    test_images, test_labels = toy_data(seed=1)
    a = fit_classifier(images, labels, ["h", "v", "sq"], recipe=TINY, seed=3, heldout=(test_images, test_labels))
    b = fit_classifier(images, labels, ["h", "v", "sq"], recipe=TINY, seed=3, heldout=(test_images, test_labels))
    c = fit_classifier(images, labels, ["h", "v", "sq"], recipe=TINY, seed=4)
    # promised: the same data, recipe, seed and thread count give a bitwise identical state dict
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    assert a.config.heldout_accuracy > 0.6  # chance is 1/3
    assert len(a.config.heldout_accuracy_per_class) == 3
    assert a.config.training["seed"] == 3 and a.config.training["num_train_images"] == 72
    assert a.config.training["recipe"]["block_out_channels"] == [8, 16]
    assert not a.training  # returned in eval mode


def test_digits_classifier_beats_chance():
    domain = get_evaluation_domain("digits", resolution=16)
    recipe = ClassifierRecipe(num_epochs=3, block_out_channels=(8, 16, 32), learning_rate=1e-2, batch_size=64)
    clf = train_evaluation_classifier(domain, recipe=recipe)
    assert clf.classes == domain.classifier_classes == [str(d) for d in range(10)]
    assert clf.config.domain == "digits"
    assert clf.heldout_accuracy > 0.5  # chance is 0.1
    assert clf.config.training["num_heldout_images"] == sum(domain.real(c).shape[0] for c in range(10))


def test_save_load_round_trip_and_features(tmp_path):
    images, labels = toy_data()
    clf = fit_classifier(images, labels, ["h", "v", "sq"], domain="toy", recipe=TINY, heldout=(images, labels))
    clf.save_pretrained(tmp_path / "clf")
    assert (tmp_path / "clf" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = EvaluationClassifier.from_pretrained(tmp_path / "clf").eval()
    assert loaded.classes == ["h", "v", "sq"] and loaded.config.domain == "toy"
    assert loaded.heldout_accuracy == clf.heldout_accuracy
    assert loaded.config.training == clf.config.training
    state, reloaded = clf.state_dict(), loaded.state_dict()
    assert all(torch.equal(state[k], reloaded[k]) for k in state)  # safetensors round trip is exact
    torch.testing.assert_close(loaded(images[:5]), clf(images[:5]))
    logits, feats = loaded.embed(images, batch_size=7)
    assert logits.shape == (72, 3) and feats.shape == (72, 16) == (72, loaded.feature_dim)
    torch.testing.assert_close(feats[:5], loaded.features(images[:5]).detach())
    assert loaded.predict(images).shape == (72,)


def test_without_head_keeps_the_features_and_refuses_logits(tmp_path):
    images, labels = toy_data()
    clf = fit_classifier(images, labels, ["h", "v", "sq"], domain="toy", recipe=TINY, heldout=(images, labels))
    encoder = clf.without_head()
    assert encoder.head is None and encoder.config.with_head is False and clf.head is not None
    assert encoder.classes == clf.classes and encoder.heldout_accuracy == clf.heldout_accuracy
    assert encoder.config.training == clf.config.training and not encoder.training
    assert torch.equal(encoder.features(images), clf.features(images)) and encoder.feature_dim == clf.feature_dim
    encoder.save_pretrained(tmp_path / "enc")
    with safe_open(tmp_path / "enc" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if k.startswith("head.")] and "body.0.weight" in f.keys()
    loaded = EvaluationClassifier.from_pretrained(tmp_path / "enc").eval()
    assert loaded.head is None and torch.equal(loaded.features(images), clf.features(images))
    for call in (loaded, loaded.embed, loaded.predict):
        with pytest.raises(ValueError, match=r"without its classification head \(with_head=False.*features\(\)"):
            call(images[:2])
    # the training copy stays untouched, and a classifier saved with its head loads with it (the default)
    assert clf.head.weight.requires_grad and clf(images[:2]).shape == (2, 3)
    clf.save_pretrained(tmp_path / "clf")
    assert EvaluationClassifier.from_pretrained(tmp_path / "clf").head is not None
    with pytest.raises(ValueError, match="`with_head` must be True or False, got 'no'"):
        EvaluationClassifier(classes=["a", "b"], with_head="no")


def test_default_architecture_feature_dim():
    clf = EvaluationClassifier(classes=["a", "b"]).eval()
    assert clf.features(torch.zeros(2, 1, 32, 32)).shape == (2, 128) == (2, clf.feature_dim)


def test_mismatched_images_are_rejected():
    clf = EvaluationClassifier(classes=["a", "b"], domain="toy", resolution=16, block_out_channels=(4, 8)).eval()
    match = r"an evaluation classifier that does not match the data: the 'toy' classifier expects .*\[N, 1, 16, 16\]"
    with pytest.raises(ValueError, match=match):
        clf(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match=match):
        clf.features(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=match):
        clf.embed(torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="float"):
        clf(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        clf.predict([[0.0]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="classes"):
        EvaluationClassifier(classes=["a"])
    with pytest.raises(ValueError, match="too small"):
        EvaluationClassifier(classes=["a", "b"], resolution=8, block_out_channels=(4, 4, 4, 4, 4))
    with pytest.raises(ValueError, match="num_epochs"):
        ClassifierRecipe(num_epochs=0)
    images, labels = toy_data(4)
    with pytest.raises(ValueError, match=r"labels of `images` must lie in \[0, 2\)"):
        fit_classifier(images, labels, ["a", "b"], recipe=TINY)
    with pytest.raises(ValueError, match="labels of `images`"):
        fit_classifier(images, labels[:3], ["a", "b", "c"], recipe=TINY)


def test_affine_jitter_without_jitter_is_identity():
    images, _ = toy_data(2)
    still = ClassifierRecipe(max_rotation=0, max_scale=0, max_translation=0, max_shear=0)
    torch.testing.assert_close(affine_jitter(images, still, torch.Generator().manual_seed(0)), images)
    moved = affine_jitter(images, ClassifierRecipe(), torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and not torch.allclose(moved, images)


def test_load_builds_caches_and_checks_the_domain(tmp_path):
    domain = get_evaluation_domain("digits", resolution=16, num_classes=3)
    domain.classifier_recipe = ClassifierRecipe(num_epochs=1, block_out_channels=(4, 8))
    with pytest.raises(FileNotFoundError, match="scripts/train_eval_classifiers.py --domain digits"):
        load_evaluation_classifier(domain, cache_dir=tmp_path, build=False)
    built = load_evaluation_classifier(domain, cache_dir=tmp_path)
    folder = classifier_cache_path(domain, tmp_path)
    assert (folder / "config.json").is_file() and folder.parent.name == "classifiers"
    cached = load_evaluation_classifier(domain, cache_dir=tmp_path, build=False)
    assert all(torch.equal(built.state_dict()[k], v) for k, v in cached.state_dict().items())
    assert cached.config.training["cache_key"] in folder.name
    # the domain's own property uses the same cache
    domain.cache_dir = tmp_path
    assert domain.classifier.classes == ["0", "1", "2"]
    assert 0.0 <= domain.real_accuracy <= 1.0 and len(domain.real_accuracy_per_class()) == 3

    other = get_evaluation_domain("digits", resolution=16, num_classes=4)
    with pytest.raises(ValueError, match="does not match the data.*3 classes differ from the domain's 4"):
        check_classifier_matches(built, other)
    with pytest.raises(ValueError, match="does not match the data.*1x16x16 images"):
        check_classifier_matches(built, get_evaluation_domain("digits", resolution=32, num_classes=3))
    built.save_pretrained(tmp_path / "mine")
    with pytest.raises(ValueError, match="does not match the data"):
        load_evaluation_classifier(other, path=tmp_path / "mine")


def test_train_eval_classifiers_script(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "train_eval_classifiers.py"
    spec = importlib.util.spec_from_file_location("train_eval_classifiers", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--domain", "digits", "--resolution", "16", "--num_epochs", "1", "--output_dir", str(tmp_path / "out")]
    script.main(script.parse_args(args))
    table = capsys.readouterr().out
    assert "CPU capability" in table and "| digits | 10 eval / 10 total | 997 | 600 |" in table
    loaded = EvaluationClassifier.from_pretrained(tmp_path / "out" / "digits")
    assert loaded.config.training["recipe"]["num_epochs"] == 1 and loaded.config.heldout_accuracy is not None
