# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Loading user images (the few "shots" of a new class) into model-ready tensors.

Conversion rules, shared by every source that reads image files (following diffusers' `VaeImageProcessor` with
`resize_mode="crop"`):

* **Orientation**: the EXIF orientation tag of a file is applied.
* **Modes**: `1`, `L`, `P`, `RGB`, `CMYK`, `YCbCr`, `RGBX` and 16-bit gray (`I;16`) images are converted to `L`
  (1 channel, ITU-R 601-2 luma) or `RGB` (3 channels, gray repeated). Images with an alpha channel (`LA`, `PA`, `RGBA`,
  `RGBa`, palette images with transparency) are composited on a solid background, white by default (`background=
  "black"` for dark backgrounds), never dropped silently. `I`, `F`, `LAB` and `HSV` images have no unambiguous 8-bit
  meaning and are rejected.
* **Size**: the shorter side is resized to `sample_size` (Lanczos when shrinking, bicubic when enlarging) and the
  longer side is center-cropped.
* **Range**: float32 in [-1, 1] (uint8 0 -> -1, 255 -> 1).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .base import BACKGROUNDS, check_background, check_resolution_channels, uint8_to_float

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga",
)  # fmt: skip
SUPPORTED_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I;16", "I;16L",
                   "I;16B", "I;16N")  # fmt: skip
_BACKGROUND_VALUE = {"white": 255, "black": 0}
# allowed rounding slack when checking that float tensors are in [-1, 1] or arrays in [0, 1]
_RANGE_TOLERANCE = 1e-3


def _describe(name: str | None, index: int | None) -> str:
    if name:
        return f"image file {name!r}"
    return f"image {index}" if index is not None else "image"


def read_image_file(path: str | os.PathLike) -> Image.Image:
    """
    Open and fully decode an image file (EXIF orientation applied).

    Raises:
        `ValueError`: naming the file when it cannot be read, is not an image, or is truncated.
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(
            f"could not read image file {path!r} (unreadable, not an image, or truncated): {err}"
        ) from err
    return image


def _to_mode(image: Image.Image, channels: int, background: str, what: str) -> Image.Image:
    """Convert to `L` (channels=1) or `RGB` (channels=3), compositing any alpha channel on `background`."""
    mode = image.mode
    if mode not in SUPPORTED_MODES:
        raise ValueError(
            f"{what} has unsupported mode {mode!r}; supported modes are {SUPPORTED_MODES}. "
            "Convert it to 'L' or 'RGB' first (e.g. image.convert('RGB') after scaling values to 0-255)."
        )
    if mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.uint16)
        image = Image.fromarray(((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8), mode="L")
        mode = "L"
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        value = _BACKGROUND_VALUE[background]
        base = Image.new("RGBA", rgba.size, (value, value, value, 255))
        image = Image.alpha_composite(base, rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    if image.mode != target:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image = image.convert(target)
    return image


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side of `image` to `size` and center-crop the longer side to `size`."""
    w, h = image.size
    if (w, h) == (size, size):
        return image
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    image = image.resize((new_w, new_h), resample=resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def pil_to_uint8(
    image: Image.Image,
    sample_size: int,
    channels: int,
    background: str = "white",
    name: str | None = None,
    index: int | None = None,
) -> np.ndarray:
    """
    Convert one PIL image to uint8 `[channels, sample_size, sample_size]` (see the module docstring for the rules).

    Args:
        image (`PIL.Image.Image`): the image.
        sample_size (`int`): output side length.
        channels (`int`): 1 or 3.
        background (`str`, defaults to `"white"`): background for alpha compositing, `"white"` or `"black"`.
        name (`str`, *optional*): file name used in error messages.
        index (`int`, *optional*): position used in error messages.
    """
    what = _describe(name, index)
    w, h = image.size
    if min(w, h) < 2:
        raise ValueError(f"{what} is {w}x{h} pixels; images must be at least 2x2 pixels.")
    image = resize_center_crop(_to_mode(image, channels, background, what), sample_size)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # [C, H, W]


def list_image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files (by extension, see `IMAGE_EXTENSIONS`) in `folder`, sorted by name; hidden files are skipped."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    files = [
        p
        for p in folder.glob(pattern)
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files)


def _tensor_images(images: torch.Tensor, sample_size: int, channels: int) -> torch.Tensor:
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"a tensor `images` must be [N, C, H, W] (or [C, H, W]) with C in (1, 3), got shape {list(images.shape)}."
        )
    if not images.is_floating_point():
        raise ValueError(f"a tensor `images` must be floating point in [-1, 1], got dtype {images.dtype}.")
    if images.shape[0] == 0:
        raise ValueError("`images` is empty: pass at least one image.")
    images = images.detach().to("cpu", torch.float32)
    if not torch.isfinite(images).all():
        bad = (~torch.isfinite(images)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(
            f"tensor `images` holds NaN or infinite values (images {bad[:10]}); values must be in [-1, 1]."
        )
    lo, hi = images.min().item(), images.max().item()
    if lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"tensor `images` must hold values in [-1, 1], got min {lo:.4g} and max {hi:.4g}; "
            "map [0, 1] images with `images * 2 - 1`."
        )
    h, w = images.shape[-2:]
    if min(h, w) < 2:
        raise ValueError(f"tensor `images` are {w}x{h} pixels; images must be at least 2x2 pixels.")
    images = images.clamp(-1, 1)
    # 1. channels
    if images.shape[1] == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images * weights).sum(1, keepdim=True)
    elif images.shape[1] == 1 and channels == 3:
        images = images.repeat(1, 3, 1, 1)
    # 2. resize the shorter side + center crop
    if (h, w) != (sample_size, sample_size):
        scale = sample_size / min(h, w)
        new_h, new_w = max(sample_size, round(h * scale)), max(sample_size, round(w * scale))
        images = F.interpolate(images, size=(new_h, new_w), mode="bicubic", antialias=scale < 1, align_corners=False)
        top, left = (new_h - sample_size) // 2, (new_w - sample_size) // 2
        images = images[:, :, top : top + sample_size, left : left + sample_size].clamp(-1, 1)
    return images.contiguous()


def _numpy_to_pil(images: np.ndarray) -> list[Image.Image]:
    if images.ndim == 3 and images.shape[-1] in (1, 3, 4):
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"a numpy `images` array must be [N, H, W, C] with C in (1, 3, 4), got shape {list(images.shape)}."
        )
    if images.shape[0] == 0:
        raise ValueError("`images` is empty: pass at least one image.")
    if images.dtype == np.uint8:
        array = images
    elif np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise ValueError("numpy `images` hold NaN or infinite values; float arrays must be in [0, 1].")
        lo, hi = float(images.min()), float(images.max())
        if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
            raise ValueError(
                f"float numpy `images` must hold values in [0, 1] (diffusers' numpy convention), got min {lo:.4g} "
                f"and max {hi:.4g}."
            )
        array = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"numpy `images` must be uint8 (0-255) or float (0-1), got dtype {images.dtype}.")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[-1]]
    if mode == "L":
        array = array[..., 0]
    return [Image.fromarray(np.ascontiguousarray(a), mode=mode) for a in array]


def _is_hf_dataset(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "datasets" and hasattr(obj, "column_names")


def _hf_item_to_pil(item: Any, index: int, column: str) -> tuple[Image.Image, str | None]:
    """Decode one entry of an image column: a PIL image, a path, a `{"bytes", "path"}` dict or an array."""
    if isinstance(item, Image.Image):
        return item, getattr(item, "filename", None) or None
    if isinstance(item, str | os.PathLike):
        return read_image_file(item), os.fspath(item)
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        if item.get("bytes") is not None:
            name = item.get("path") or f"row {index}"
            try:
                with Image.open(io.BytesIO(item["bytes"])) as image:
                    image.load()
                    return ImageOps.exif_transpose(image), name
            except (OSError, SyntaxError, ValueError) as err:
                raise ValueError(f"could not decode the image of row {index} ({name!r}): {err}") from err
        return read_image_file(item["path"]), item["path"]
    if isinstance(item, np.ndarray):
        return _numpy_to_pil(item)[0], None
    raise ValueError(
        f"row {index} of column {column!r} holds a {type(item).__name__}, not an image; expected a PIL image, a path "
        "or an image feature."
    )


def check_columns(dataset: Any, columns: dict[str, str]) -> None:
    """Raise a `ValueError` naming each argument whose column is missing from a `datasets` dataset."""
    available = list(dataset.column_names)
    for arg, column in columns.items():
        if column not in available:
            raise ValueError(f"`{arg}`={column!r} is not a column of the dataset; available columns: {available}.")


def load_images_uint8(
    images: Any,
    *,
    sample_size: int,
    channels: int,
    image_column: str = "image",
    background: str = "white",
) -> torch.Tensor:
    """Like [`load_images`] but returns uint8 `[N, channels, sample_size, sample_size]` (tensors are quantized)."""
    check_resolution_channels(sample_size, channels, "sample_size")
    check_background(background)
    if isinstance(images, torch.Tensor):
        return _tensor_images(images, sample_size, channels).add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    arrays, in_color, not_square = [], 0, 0
    for i, (img, name) in enumerate(_iter_pil(images, image_column)):
        in_color += channels == 1 and _has_color(img)
        not_square += img.size[0] != img.size[1]
        arrays.append(pil_to_uint8(img, sample_size, channels, background, name, i))
    if not arrays:
        raise ValueError("`images` is empty: pass at least one image.")
    if in_color:
        logger.warning(
            "%d of %d images are in color; this 1-channel model sees them in grayscale (ITU-R 601-2 luma).",
            in_color,
            len(arrays),
        )
    if not_square:
        logger.info(
            "%d of %d images are not square: the shorter side was resized to %d and the longer one center-cropped.",
            not_square,
            len(arrays),
            sample_size,
        )
    return torch.from_numpy(np.stack(arrays))


def _has_color(image: Image.Image) -> bool:
    """Whether `image` holds any pixel whose red, green and blue values differ (gray modes never do)."""
    if image.mode in ("1", "L", "LA", "La") or image.mode.startswith("I;16") or image.mode not in SUPPORTED_MODES:
        return False
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())


def _iter_pil(images: Any, image_column: str):
    """Yield `(PIL image, file name or None)` for every supported input except tensors."""
    if isinstance(images, Image.Image):
        yield images, getattr(images, "filename", None) or None
        return
    if isinstance(images, str | os.PathLike):
        path = Path(images)
        if not path.exists():
            raise ValueError(f"`images` path {str(path)!r} does not exist.")
        if path.is_file():
            yield read_image_file(path), str(path)
            return
        files = list_image_files(path)
        nested = [f for f in list_image_files(path, recursive=True) if f.parent != path]
        if not files:
            hint = (
                f" It has {len(nested)} image(s) in subfolders, which are not read: pass one subfolder (one class)."
                if nested
                else ""
            )
            raise ValueError(
                f"`images` folder {str(path)!r} holds no image files at its top level; allowed extensions: "
                f"{IMAGE_EXTENSIONS}.{hint}"
            )
        if nested:
            subfolders = sorted({f.relative_to(path).parts[0] for f in nested})
            logger.warning(
                "`images` folder %r: using the %d image file(s) at its top level; %d more in %d subfolder(s) (%s) "
                "are not read. Pass a subfolder to adapt to that class instead.",
                str(path),
                len(files),
                len(nested),
                len(subfolders),
                ", ".join(subfolders[:5]) + (", ..." if len(subfolders) > 5 else ""),
            )
        for f in files:
            yield read_image_file(f), str(f)
        return
    if isinstance(images, np.ndarray):
        yield from ((img, None) for img in _numpy_to_pil(images))
        return
    if _is_hf_dataset(images):
        check_columns(images, {"image_column": image_column})
        if len(images) == 0:
            raise ValueError("`images` is an empty dataset: pass at least one image.")
        for i, item in enumerate(images[image_column]):
            yield _hf_item_to_pil(item, i, image_column)
        return
    if isinstance(images, Sequence) and not isinstance(images, str | bytes):
        if len(images) == 0:
            raise ValueError("`images` is empty: pass at least one image.")
        for i, item in enumerate(images):
            if isinstance(item, Image.Image):
                yield item, getattr(item, "filename", None) or None
            elif isinstance(item, str | os.PathLike):
                if not os.path.isfile(item):
                    raise ValueError(f"`images[{i}]` = {os.fspath(item)!r} is not an image file.")
                yield read_image_file(item), os.fspath(item)
            else:
                raise ValueError(
                    f"`images[{i}]` is a {type(item).__name__}; a list of images must hold PIL images or file paths."
                )
        return
    raise ValueError(
        f"`images` has unsupported type {type(images).__name__}; pass a list of PIL images, a folder path, a numpy "
        "array [N, H, W, C] (uint8 or float in [0, 1]), a torch tensor [N, C, H, W] in [-1, 1] or a "
        "`datasets.Dataset`."
    )


def load_images(
    images: Any,
    *,
    sample_size: int,
    channels: int,
    image_column: str = "image",
    background: str = "white",
) -> torch.Tensor:
    """
    Load user images into a float32 tensor `[N, channels, sample_size, sample_size]` in [-1, 1].

    Conversion follows the rules of this module's docstring: EXIF orientation applied, modes converted to `L`/`RGB`,
    alpha composited on `background`, shorter side resized to `sample_size` and center-cropped.

    Args:
        images: one of
            - a PIL image or a list of PIL images (or image file paths),
            - a path to an image file or to a flat folder of images (files with an extension in `IMAGE_EXTENSIONS`,
              sorted by name; subfolders and hidden files are ignored),
            - a numpy array `[N, H, W, C]` (C in 1, 3, 4) of uint8 (0-255) or float (0-1),
            - a torch tensor `[N, C, H, W]` (C in 1, 3) of floats in [-1, 1] (resized with bicubic interpolation,
              antialiased when shrinking, without quantization),
            - a `datasets.Dataset` with an image column.
        sample_size (`int`): output side length.
        channels (`int`): 1 (grayscale) or 3 (RGB).
        image_column (`str`, defaults to `"image"`): column of a `datasets.Dataset` holding the images.
        background (`str`, defaults to `"white"`): `"white"` or `"black"`, the color that transparent pixels are
            composited on.

    Returns:
        `torch.Tensor`: float32 `[N, channels, sample_size, sample_size]` in [-1, 1].

    Raises:
        `ValueError`: naming the argument, file or value, when there are no images, a folder holds no images, a file
            is unreadable or truncated, an image is smaller than 2x2, values are NaN, infinite or out of range, a
            mode is unsupported, or `image_column` is missing.

    Example:

    ```py
    >>> from PIL import Image
    >>> from metagan_hub.data.images import load_images
    >>> shots = [Image.new("RGBA", (40, 30), (255, 0, 0, 128)) for _ in range(5)]
    >>> x = load_images(shots, sample_size=32, channels=1)
    >>> x.shape, x.dtype, bool(x.min() >= -1 and x.max() <= 1)
    (torch.Size([5, 1, 32, 32]), torch.float32, True)
    ```
    """
    if isinstance(images, torch.Tensor):
        check_resolution_channels(sample_size, channels, "sample_size")
        check_background(background)
        return _tensor_images(images, sample_size, channels)
    return uint8_to_float(
        load_images_uint8(
            images, sample_size=sample_size, channels=channels, image_column=image_column, background=background
        )
    )


__all__ = [
    "BACKGROUNDS",
    "IMAGE_EXTENSIONS",
    "SUPPORTED_MODES",
    "list_image_files",
    "load_images",
    "load_images_uint8",
    "pil_to_uint8",
    "read_image_file",
    "resize_center_crop",
]
