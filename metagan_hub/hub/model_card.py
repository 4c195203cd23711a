# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Model-card rendering for Meta-GAN pipelines and LoRA adapters, from the templates in `model_cards/`."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from importlib import resources
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData

from .safety import public_card_info

logger = logging.getLogger(__name__)

CARD_INFO_NAME = "metagan_hub.json"
# Expected JSON types of the known top-level keys of `metagan_hub.json` (other keys are kept as they are).
CARD_INFO_SCHEMA: dict[str, tuple[type, ...]] = {
    "base_model": (str, type(None)),
    "base_model_local_name": (str, type(None)),
    "title": (str, type(None)),
    "summary": (str,),
    "license": (str,),
    "tags": (list,),
    "data_notes": (str,),
    "evaluation": (str,),
    "adaptation": (dict,),
    "training": (dict, str),
    "adaptation_lr_scales": (dict,),
    "variety_setting": (dict,),
}
# `variety_setting`: the setting a checkpoint's benchmark found to give more varied samples and fewer near-copies of
# the shots, as `adapt(shot_augment=..., [diversity_loss=..., diversity_weight=...], [copy_stop=...])` plus sampling
# at `latent_scale=...` [with `avoid_copies_of=shots, copy_margin=...`]; absent where none was found to help.
VARIETY_SETTING_KEYS = ("shot_augment", "latent_scale")
VARIETY_SETTING_OPTIONAL_KEYS = ("diversity_loss", "diversity_weight", "copy_margin", "copy_stop")
# the keys that go to the adapted pipeline's `__call__`, not to `adapt()`
VARIETY_SAMPLING_KEYS = ("latent_scale", "copy_margin")


def read_card_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """
    Read the card metadata `metagan_hub.json` of a saved folder; `None` when the folder has none. The file must be a
    JSON object whose known keys have the expected types (`CARD_INFO_SCHEMA`); anything else raises a `ValueError`
    naming the file and the expected shape.

    Example:

    ```py
    >>> import json, tempfile
    >>> from metagan_hub.hub.model_card import read_card_info

    >>> folder = tempfile.mkdtemp()
    >>> with open(f"{folder}/metagan_hub.json", "w") as f:
    ...     json.dump({"base_model": "org/metagan-kanji-32"}, f)
    >>> read_card_info(folder)
    {'base_model': 'org/metagan-kanji-32'}
    ```
    """
    path = os.path.join(os.fspath(folder), CARD_INFO_NAME)
    if not os.path.isfile(path):
        return None
    shape = (
        'a JSON object such as {"base_model": "org/name", "adaptation": {...}, "tags": ["..."]} '
        "(known keys and types: "
        + ", ".join(f"{k}: " + "/".join(t.__name__ for t in v) for k, v in CARD_INFO_SCHEMA.items())
        + ")"
    )
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected {shape}.") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path} holds a JSON {type(info).__name__}, expected {shape}.")
    for key, types in CARD_INFO_SCHEMA.items():
        if key in info and not isinstance(info[key], types):
            raise ValueError(
                f"{path}: `{key}` is a {type(info[key]).__name__}, expected {'/'.join(t.__name__ for t in types)}. "
                f"The file must be {shape}."
            )
    if "tags" in info and not all(isinstance(t, str) for t in info["tags"]):
        raise ValueError(f"{path}: `tags` must be a list of strings, got {info['tags']!r}.")
    if "variety_setting" in info:
        try:
            variety_setting(info)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return info


def variety_setting(card_info: dict[str, Any] | None) -> dict[str, Any] | None:
    """
    The variety setting a checkpoint's card recommends (`card_info["variety_setting"]`): `{"shot_augment": float,
    "latent_scale": float}`, optionally with `"diversity_loss": str` (one of `adapt()`'s diversity terms),
    `"diversity_weight": float`, `"copy_margin": float` and `"copy_stop": float` (a share in (0, 1), `adapt()`'s
    `copy_stop`); [`variety_adapt_options`] turns it into `adapt()` arguments, `latent_scale` goes to the adapted
    pipeline's `__call__(latent_scale=...)`, and `copy_margin`, where present, means sampling with the near-copy
    filter: `__call__(avoid_copies_of=shots, copy_margin=...)`. `None` when the card has none (its benchmark found no
    setting that helps). A malformed entry raises a `ValueError` naming the key, the value and what is allowed.

    Example:

    ```py
    >>> from metagan_hub.hub.model_card import variety_setting

    >>> variety_setting({"variety_setting": {"shot_augment": 1.0, "latent_scale": 1.5}})
    {'shot_augment': 1.0, 'latent_scale': 1.5}
    >>> variety_setting({"variety_setting": {"shot_augment": 0, "latent_scale": 1, "diversity_loss": "mixdl"}})
    {'shot_augment': 0.0, 'latent_scale': 1.0, 'diversity_loss': 'mixdl'}
    >>> variety_setting({"variety_setting": {"shot_augment": 1, "latent_scale": 1.25, "copy_margin": 1.25}})
    {'shot_augment': 1.0, 'latent_scale': 1.25, 'copy_margin': 1.25}
    >>> variety_setting({"variety_setting": {"shot_augment": 1, "latent_scale": 1.25, "copy_stop": 0.3}})
    {'shot_augment': 1.0, 'latent_scale': 1.25, 'copy_stop': 0.3}
    >>> variety_setting({"title": "no setting"}) is None
    True
    ```
    """
    from ..training.diversity import DIVERSITY_LOSSES

    value = (card_info or {}).get("variety_setting")
    if value is None:
        return None
    allowed = (
        'a JSON object {"shot_augment": number >= 0, "latent_scale": number > 0}, optionally with "diversity_loss": '
        f'one of {list(DIVERSITY_LOSSES)}, "diversity_weight": number >= 0, "copy_margin": number > 0 and '
        '"copy_stop": number in (0, 1)'
    )
    keys = set(value) if isinstance(value, dict) else set()
    if (
        not isinstance(value, dict)
        or not set(VARIETY_SETTING_KEYS) <= keys
        or not keys <= set(VARIETY_SETTING_KEYS + VARIETY_SETTING_OPTIONAL_KEYS)
        or ("diversity_weight" in keys and "diversity_loss" not in keys)
    ):
        raise ValueError(f"`variety_setting` is {value!r}; expected {allowed}.")
    setting: dict[str, Any] = {}
    for key in (k for k in VARIETY_SETTING_KEYS + VARIETY_SETTING_OPTIONAL_KEYS if k in value):
        item = value[key]
        if key == "diversity_loss":
            ok = item in DIVERSITY_LOSSES
        else:
            ok = isinstance(item, int | float) and not isinstance(item, bool) and math.isfinite(item) and item >= 0
            ok = ok and not (key in VARIETY_SAMPLING_KEYS and item == 0)  # both must be positive
            ok = ok and not (key == "copy_stop" and not 0 < item < 1)
        if not ok:
            raise ValueError(f"`variety_setting.{key}` is {item!r}; expected {allowed}.")
        setting[key] = item if key == "diversity_loss" else float(item)
    return setting


def variety_adapt_options(setting: dict[str, Any]) -> dict[str, Any]:
    """
    The `adapt()` keyword arguments of a variety setting as [`variety_setting`] returns it: `shot_augment`, and
    `diversity_loss` / `diversity_weight` and `copy_stop` where the setting has them (its `latent_scale` and
    `copy_margin` are for sampling).

    Example:

    ```py
    >>> from metagan_hub.hub.model_card import variety_adapt_options

    >>> variety_adapt_options({"shot_augment": 0.0, "latent_scale": 1.0, "diversity_loss": "mixdl"})
    {'shot_augment': 0.0, 'diversity_loss': 'mixdl'}
    >>> variety_adapt_options({"shot_augment": 1.0, "latent_scale": 1.25, "copy_margin": 1.25, "copy_stop": 0.3})
    {'shot_augment': 1.0, 'copy_stop': 0.3}
    ```
    """
    return {k: v for k, v in setting.items() if k not in VARIETY_SAMPLING_KEYS}


BASE_TAGS = ["gan", "meta-learning", "few-shot", "metagan_hub", "diffusers", "unconditional-image-generation"]


def _template_text(name: str) -> str:
    return resources.files("metagan_hub._model_cards").joinpath(name).read_text(encoding="utf-8")


def _hub_url(model_id: str | None) -> str | None:
    if model_id is None:
        return None
    from huggingface_hub import constants

    if "/" in model_id and not model_id.startswith((".", "/")):
        return f"{constants.ENDPOINT}/{model_id}"
    return model_id


def _count(params: int) -> str:
    return f"{params / 1e6:.2f} M" if params >= 1e5 else f"{params / 1e3:.1f} k"


def format_table(record: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """Render a flat dict as a two-column Markdown table (lists and dicts are shown as compact JSON)."""
    rows = ["| key | value |", "|---|---|"]
    for key, value in record.items():
        if key in skip:
            continue
        if isinstance(value, float):
            text = f"{value:.6g}"
        elif isinstance(value, list | tuple | dict):
            text = json.dumps(value, default=str)
            if len(text) > 200:
                text = text[:197] + "..."
        else:
            text = str(value)
        rows.append(f"| {key} | {text.replace('|', '/')} |")
    return "\n".join(rows)


CARD_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")


def check_card_images(card_images: Sequence[str] | None, folder: str | os.PathLike) -> list[str]:
    """
    Return `card_images` as a list if each is the file name of an image already in `folder` (a relative path inside
    it, ending in one of `CARD_IMAGE_SUFFIXES`), else raise a `ValueError` naming the argument, the value and what is
    allowed. The model card then shows them (e.g. the shots and a sample grid). None or an empty sequence: `[]`.

    Example:

    ```py
    >>> import tempfile
    >>> from PIL import Image
    >>> from metagan_hub.hub.model_card import check_card_images

    >>> folder = tempfile.mkdtemp()
    >>> Image.new("L", (8, 8)).save(f"{folder}/samples.png")
    >>> check_card_images(["samples.png"], folder)
    ['samples.png']
    ```
    """
    if card_images is None:
        return []
    if isinstance(card_images, str) or not isinstance(card_images, Sequence):
        raise ValueError(f"`card_images` must be a list of image file names in the saved folder, got {card_images!r}.")
    names = list(card_images)
    for name in names:
        parts = name.replace("\\", "/").split("/") if isinstance(name, str) else []
        if (
            not isinstance(name, str)
            or not name
            or os.path.isabs(name)
            or ".." in parts
            or not name.lower().endswith(CARD_IMAGE_SUFFIXES)
        ):
            raise ValueError(
                f"`card_images` entries must be relative image file names ({', '.join(CARD_IMAGE_SUFFIXES)}) inside "
                f"the saved folder, got {name!r}."
            )
        if not os.path.isfile(os.path.join(folder, name)):
            raise ValueError(
                f"`card_images` entry {name!r} is not a file in {os.fspath(folder)!r}: write the image there before "
                "saving, so that the card's link works once the folder is uploaded."
            )
    return names


def _shots_note(adaptation: Any) -> str:
    """The cards' sentence on the images an adapted model (or adapter) was trained on; empty without a record."""
    shots = adaptation.get("shots") if isinstance(adaptation, dict) else None
    if shots is None:
        return ""
    return (
        f"Adapted on the {shots} image{'s' if shots != 1 else ''} given to `adapt()`. metagan_hub records neither "
        "their source nor their licence: make sure you may share a model adapted on them (a few-shot GAN can "
        "reproduce its shots), and the images themselves if they are shown here."
    )


def _card_data(
    base_model: str | None, extra_tags: list[str] | None, license: str, relation: str | None = None
) -> ModelCardData:
    """The card's YAML metadata; `relation` (`"finetune"`, `"adapter"`) places it in the base model's model tree on
    the Hub, written only with a Hub `base_model`."""
    tags = list(dict.fromkeys(BASE_TAGS + list(extra_tags or [])))
    data = ModelCardData(
        license=license,
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=tags,
    )
    if base_model is not None and "/" in base_model and not base_model.startswith((".", "/")):
        data.base_model = base_model
        if relation is not None:
            data.base_model_relation = relation
    return data


def _brief(value: Any) -> Any:
    """A config value for the card's components table: long lists (a copy encoder's 2,000 class names) and dicts (its
    training record) become a short note; the full value stays in the component's config.json."""
    if isinstance(value, list | tuple) and len(value) > 8:
        return f"<{len(value)} items>"
    if isinstance(value, dict):
        return "<see config.json>"
    return value


def render_pipeline_card(pipeline, repo_id: str | None = None, images: Sequence[str] = ()) -> ModelCard:
    """
    Render the model card of a [`MetaGANPipeline`], or of a single Meta-GAN model, from `model_cards/pipeline.md`.

    The card's YAML metadata holds the licence, `library_name`, tags and, for adapted models, `base_model`. The body
    has a usage snippet for `repo_id`, a table of components, and the adaptation / training records and the
    `evaluation` Markdown (e.g. a results table of `scripts/evaluate_metagan.py`) that `pipeline.card_info` carries.

    Args:
        pipeline (`MetaGANPipeline`, `MetaGANGenerator` or `MetaGANDiscriminator`): what to describe.
        repo_id (`str`, *optional*): the Hub repo id (or local folder) the usage snippet loads from.
        images (`Sequence[str]`, *optional*): image files beside the card (see [`check_card_images`]) to show
            under the summary.

    Example:

    ```py
    >>> from metagan_hub import MetaGANGenerator, MetaGANPipeline
    >>> from metagan_hub.hub.model_card import render_pipeline_card

    >>> pipe = MetaGANPipeline(generator=MetaGANGenerator(sample_size=16, block_out_channels=(32, 16)))
    >>> card = render_pipeline_card(pipe, "me/my-metagan")
    >>> "unconditional-image-generation" in str(card)
    True
    ```
    """
    info = public_card_info(getattr(pipeline, "card_info", None) or {})  # never a local path in a card
    base_model = info.get("base_model")
    is_model = isinstance(pipeline, torch.nn.Module)
    modules = {"model": pipeline} if is_model else pipeline.components  # the registered components, None if absent
    components = []
    for name, module in modules.items():
        if module is None:
            continue
        config = {k: _brief(v) for k, v in module.config.items() if not k.startswith("_")}
        components.append(
            {
                "name": name,
                "cls": type(module).__name__,
                "params": _count(sum(p.numel() for p in module.parameters())),
                "config": json.dumps(config, default=str),
            }
        )
    adaptation = info.get("adaptation")
    training = info.get("training")
    card = ModelCard.from_template(
        _card_data(
            base_model, info.get("tags"), info.get("license", "apache-2.0"), "finetune" if adaptation else None
        ),
        template_str=_template_text("pipeline.md"),
        title=info.get("title")
        or (repo_id.split("/")[-1] if repo_id else ("Adapted Meta-GAN" if adaptation else "Meta-GAN pipeline")),
        summary=info.get("summary", ""),
        repo_id=repo_id or "path/to/this/folder",
        components=components,
        model_class=type(pipeline).__name__ if is_model else None,
        has_discriminator=not is_model and pipeline.discriminator is not None,
        base_model=base_model,
        base_model_local_name=info.get("base_model_local_name"),
        base_model_url=_hub_url(base_model),
        adaptation_table=format_table(adaptation, skip=("losses",)) if adaptation else "",
        shots_note=_shots_note(adaptation),
        images=list(images),
        training_details=format_table(training) if isinstance(training, dict) else (training or ""),
        data_notes=info.get("data_notes", ""),
        evaluation=info.get("evaluation", ""),
    )
    return card


def render_lora_card(
    base_model: str | None,
    weight_name: str,
    repo_id: str | None = None,
    adaptation: dict | None = None,
    images: Sequence[str] = (),
) -> ModelCard:
    """
    Render the model card of a LoRA adapter from `model_cards/lora.md`; `base_model` goes into the YAML metadata.

    Example:

    ```py
    >>> from metagan_hub.hub.model_card import render_lora_card

    >>> card = render_lora_card("org/metagan-kanji-32", "pytorch_lora_weights.safetensors", "me/my-lora")
    >>> card.data.base_model
    'org/metagan-kanji-32'
    ```
    """
    public = public_card_info({"base_model": base_model})
    base_model, local_name = public.get("base_model"), public.get("base_model_local_name")
    adaptation = public_card_info(adaptation) if adaptation else adaptation
    return ModelCard.from_template(
        _card_data(base_model, ["lora"], "apache-2.0", "adapter"),
        template_str=_template_text("lora.md"),
        title=(repo_id.split("/")[-1] if repo_id else "Meta-GAN LoRA adapter"),
        base_model=base_model or f"path/to/{local_name or 'base/model'}",
        base_model_url=_hub_url(base_model) or "",
        base_model_local_name=local_name,
        weight_name=weight_name,
        repo_id=repo_id or "path/to/this/folder",
        adaptation_table=format_table(adaptation, skip=("losses",)) if adaptation else "",
        shots_note=_shots_note(adaptation),
        images=list(images),
    )
