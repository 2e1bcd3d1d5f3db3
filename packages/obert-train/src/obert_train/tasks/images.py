"""Image classification (task ``image-classification``): class-per-subfolder images or NumPy arrays.

Data, all local (LPViT, issue 19, prunes ViT / DeiT image classifiers):

* an image folder in the usual class-per-subfolder layout: ``DIR/train/<class>/*.png`` and
  ``DIR/dev/<class>/*.png``, or ``DIR/<class>/*.png`` split into training and dev images by a
  seeded fraction (:func:`split_examples`); the label names are the class folder names (sorted);
  reading image files needs Pillow (the ``vision`` extra);
* NumPy arrays: ``.npz`` files (``train.npz`` / ``dev.npz`` in the folder, or ``--train-file`` /
  ``--dev-file``) holding ``images`` (``N×H×W×C`` or ``N×C×H×W``, ``uint8`` or float in
  [0, 1]), ``labels`` (``N`` class ids) and optionally ``label_names``.

Every image of the data set must have the same size (the model's image processor resizes them,
but mixed sizes usually mean mixed sources and are refused); the image processor (e.g.
``ViTImageProcessor``, loaded from the model folder or built in-process) turns them into the
model's ``pixel_values``.  Metric: dev accuracy.

Channels follow the model (``config.num_channels``): 1 — greyscale, Pillow's ``"L"``
(``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16``, ITU-R 601-2 luma) from colour images, grey
ones as they are; 3 — RGB, a grey channel repeated.  Until a model is loaded the task takes the
number of values of the processor's ``image_mean`` (1 or 3; else 3); :meth:`load_model`
re-encodes the images for the model's count.  Other counts, or a processor that normalises
another number of channels than the model takes, are refused naming both.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedModel

from obert_core import shared
from obert_train.errors import DataError, MissingDependencyError, ModelError
from obert_train.tasks.base import Feature, Task, _dev_accuracy

__all__ = [
    "CHANNELS",
    "IMAGE_EXTENSIONS",
    "ImageClassificationTask",
    "ImageExample",
    "processor_image_size",
    "read_image_arrays",
    "read_image_folder",
    "split_examples",
]

IMAGE_EXTENSIONS = shared.IMAGE_EXTENSIONS
"""File endings read as images in a class folder (other files are ignored; the one list both
obert-train and obert-deploy read, :data:`obert_core.shared.IMAGE_EXTENSIONS`)."""

_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
"""Pillow modes read as one grey channel (``"L"``); every other mode is read as RGB."""

CHANNELS = (1, 3)
"""The channel counts the task converts images to: greyscale (``"L"``) and RGB."""


@dataclass(frozen=True)
class ImageExample:
    """One image with its class.

    Attributes:
        image: ``H×W×C`` array, ``C`` = 1 or 3 (``uint8``, or float in [0, 1]).
        label: The class name (folder name, or ``label_names[id]`` / the id of an ``.npz``).
        where: The file (and index) it came from, for error messages.
        classes: The ``.npz``'s ``label_names`` in id order (None for folders and ``.npz``
            files without names): the task numbers its classes in this order.
    """

    image: np.ndarray
    label: str
    where: str
    classes: tuple[str, ...] | None = None


def _pillow() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError:
        raise MissingDependencyError(
            "reading image files needs Pillow: pip install 'obert-train[vision]' (or give the "
            "images as .npz arrays)"
        ) from None


def read_image_folder(folder: str | Path) -> list[ImageExample]:
    """The images of a class-per-subfolder folder: ``folder/<class>/<image>``, classes sorted.

    Raises:
        DataError: If ``folder`` is missing or has no class folder, or a class folder has no
            image (naming it).
        MissingDependencyError: Without Pillow.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"image folder {str(root)!r} has no class folders; lay the images out as "
            "<folder>/<class>/<image> (or train/<class>/ and dev/<class>/)"
        )
    image_module = _pillow()
    out: list[ImageExample] = []
    for cls in classes:
        files = sorted(
            p for p in cls.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DataError(
                f"class folder {str(cls)!r} holds no image ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        for file in files:
            try:
                with image_module.open(file) as img:
                    grey = img.mode in _GREY_MODES
                    array = np.asarray(img.convert("L" if grey else "RGB"))
                    array = array[..., None] if grey else array
            except (OSError, ValueError) as exc:
                raise DataError(f"{str(file)!r} is not a readable image: {exc}") from None
            out.append(ImageExample(array, cls.name, str(file)))
    return out


def read_image_arrays(path: str | Path) -> list[ImageExample]:
    """The images of an ``.npz`` file with ``images``, ``labels`` and optional ``label_names``.

    ``images`` is ``N×H×W×C`` or ``N×C×H×W`` (C = 1 or 3), ``uint8`` or float in [0, 1];
    ``labels`` holds whole class ids, each an index into ``label_names`` when it is given (the
    label is then that name, else the id as text).

    Raises:
        DataError: For a missing file, missing keys, shapes that disagree, or a bad label.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"image array file {str(file)!r} does not exist")
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{str(file)!r} is not a NumPy .npz file: {exc}") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise DataError(
            f"{str(file)!r} has no {missing}; an image .npz holds 'images' (N x H x W x C) "
            f"and 'labels' (N), got keys {sorted(arrays)}"
        )
    images, labels = arrays["images"], arrays["labels"]
    if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{str(file)!r}: images of shape {images.shape} and labels of shape {labels.shape}; "
            "need images N x H x W x C (or N x C x H x W) and N labels"
        )
    if images.shape[0] == 0:
        raise DataError(f"{str(file)!r} holds no images")
    if images.shape[-1] not in (1, 3) and images.shape[1] in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    if images.shape[-1] not in (1, 3):
        raise DataError(
            f"{str(file)!r}: images of shape {images.shape} have neither 1 nor 3 channels"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{str(file)!r}: labels must be whole class ids, got dtype {labels.dtype}")
    names = [str(n) for n in arrays["label_names"]] if "label_names" in arrays else None
    out = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if names is not None and not 0 <= int(label) < len(names):
            raise DataError(
                f"{str(file)!r}[{i}]: label {int(label)} is not an index into the "
                f"{len(names)} label_names {names}"
            )
        text = names[int(label)] if names is not None else str(int(label))
        classes = tuple(names) if names is not None else None
        out.append(ImageExample(np.asarray(image), text, f"{file}[{i}]", classes))
    return out


def check_same_size(examples: Sequence[ImageExample]) -> None:
    """Every image must have the size of the first one.

    Raises:
        DataError: Naming the first image of another size, its size and the first one's.
    """
    if not examples:
        return
    first = examples[0]
    size = first.image.shape[:2]
    for example in examples:
        if example.image.shape[:2] != size:
            raise DataError(
                f"images of mixed sizes: {example.where} is {example.image.shape[1]}x"
                f"{example.image.shape[0]} (width x height) but {first.where} is {size[1]}x"
                f"{size[0]}; resize them to one size first"
            )


def split_examples(
    examples: Sequence[ImageExample], dev_fraction: float, seed: int
) -> tuple[list[ImageExample], list[ImageExample]]:
    """A seeded random split into training and dev examples (``round(f·N)`` dev, at least 1).

    Raises:
        DataError: If ``dev_fraction`` is outside (0, 1) or either side would be empty.
    """
    if not 0.0 < dev_fraction < 1.0:
        raise DataError(f"dev_fraction {dev_fraction!r} must lie in (0, 1), e.g. 0.2")
    n = len(examples)
    k = max(1, round(dev_fraction * n))
    if n < 2 or k >= n:
        raise DataError(
            f"{n} image(s) cannot be split into training and dev images at dev_fraction "
            f"{dev_fraction}; add images or give train/ and dev/ folders"
        )
    order = np.random.default_rng(seed).permutation(n)
    dev = sorted(int(i) for i in order[:k])
    chosen = set(dev)
    return [examples[i] for i in range(n) if i not in chosen], [examples[i] for i in dev]


def processor_image_size(processor: Any) -> tuple[int, int] | None:
    """``(height, width)`` of the ``pixel_values`` an image processor makes, if it says."""
    for attr in ("crop_size", "size"):
        if attr == "crop_size" and not getattr(processor, "do_center_crop", False):
            continue
        size = getattr(processor, attr, None)
        if isinstance(size, dict) and "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if isinstance(size, dict) and "shortest_edge" in size and attr == "crop_size":
            edge = int(size["shortest_edge"])
            return edge, edge
    return None


class ImageClassificationTask(Task):
    """Image classification: ``pixel_values`` from the model's image processor; metric: accuracy.

    Args:
        processor: The model's image processor (``AutoImageProcessor`` / ``ViTImageProcessor``).
        train: Training images.
        dev: Dev images (may be empty when only pruning).
        labels: Class names in id order; default: the sorted training labels (numeric names in
            numeric order).
        name: Task name.
        num_channels: The model's ``config.num_channels`` (1: greyscale, 3: RGB); default: the
            number of values of the processor's ``image_mean`` (1 or 3), else 3.
            :meth:`load_model` changes it to the loaded model's.

    Raises:
        DataError: For images of mixed sizes, a dev label the training data lack, a channel
            count other than 1 or 3, or a processor that fails on the images (one that
            normalises another number of channels named as such).
    """

    name: str = "image-classification"
    primary_metric: ClassVar[str] = "accuracy"

    def __init__(
        self,
        processor: Any,
        train: Sequence[ImageExample],
        dev: Sequence[ImageExample],
        *,
        labels: Sequence[str] | None = None,
        name: str = "image-classification",
        num_channels: int | None = None,
    ) -> None:
        self.name = name
        if not train:
            raise DataError("image classification: no training images")
        check_same_size([*train, *dev])
        self.image_processor = processor
        named = {e.classes for e in [*train, *dev]}
        only = next(iter(named)) if len(named) == 1 else None
        if labels is None and only is not None:
            labels = list(only)  # the .npz's label_names, in id order
        if labels is None:
            found = {e.label for e in train}
            numeric = all(label.lstrip("-").isdigit() for label in found)
            labels = sorted(found, key=int) if numeric else sorted(found)
        self.labels = list(labels)
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}
        self._examples = (list(train), list(dev))
        self.num_channels = _check_channels(
            _processor_channels(processor) if num_channels is None else num_channels,
            "num_channels",
        )
        features = self._encode(train, "training")
        self.image_size: tuple[int, int] = tuple(features[0]["pixel_values"].shape[-2:])
        super().__init__(None, features)  # type: ignore[arg-type]  # no tokenizer
        self.dev_features = self._encode(dev, "dev")

    def use_channels(self, num_channels: int, who: str = "the model") -> None:
        """Re-encode every image for ``num_channels`` (1: greyscale ``"L"``, 3: RGB).

        Raises:
            DataError: For a count other than 1 or 3, or a processor that normalises another
                number of channels (naming both).
        """
        count = _check_channels(num_channels, f"{who}'s config.num_channels")
        if count == self.num_channels:
            return
        old = self.num_channels
        self.num_channels = count
        try:
            self.train_features = self._encode(self._examples[0], "training")
            self.dev_features = self._encode(self._examples[1], "dev")
        except DataError:
            self.num_channels = old
            raise

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.labels)

    def _encode(self, examples: Sequence[ImageExample], split: str) -> list[Feature]:
        if not examples:
            return []
        bad = next((e for e in examples if e.label not in self.label_to_id), None)
        if bad is not None:
            raise DataError(
                f"{bad.where}: {split} label {bad.label!r} is not among the training labels "
                f"{self.labels}; fix the class folder (or labels)"
            )
        _check_processor_channels(self.image_processor, self.num_channels)
        features: list[Feature] = []
        for start in range(0, len(examples), 64):
            chunk = examples[start : start + 64]
            images = [_to_channels(e.image, self.num_channels) for e in chunk]
            try:
                pixels = self.image_processor(
                    images=images, return_tensors="pt", input_data_format="channels_last"
                )["pixel_values"]
            except (ValueError, TypeError) as exc:
                raise DataError(
                    f"the image processor {type(self.image_processor).__name__} failed on "
                    f"{chunk[0].where}: {exc}"
                ) from None
            for example, tensor in zip(chunk, pixels, strict=True):
                features.append(
                    {
                        "pixel_values": tensor.float(),
                        "labels": self.label_to_id[example.label],
                    }
                )
        return features

    def collate(self, features: Sequence[Feature]) -> dict[str, torch.Tensor]:
        """Stack ``pixel_values`` and ``labels``."""
        return {
            "pixel_values": torch.stack([f["pixel_values"] for f in features]),
            "labels": torch.tensor([int(f["labels"]) for f in features], dtype=torch.long),
        }

    def check_model(self, model: torch.nn.Module, who: str = "the model") -> None:
        """The model must take the task's images: ``config.image_size`` and ``num_channels``.

        The processor's image size must be the model's ``config.image_size``, the task's
        channels its ``config.num_channels``.

        Raises:
            ModelError: Naming both sizes or both channel counts.
        """
        config = getattr(model, "config", None)
        channels = getattr(config, "num_channels", None)
        if channels is not None and channels != self.num_channels:
            raise ModelError(
                f"the task's images have {self.num_channels} channel(s) but {who} takes "
                f"{channels} (config.num_channels = {channels!r}); load it with the task's "
                "load_model (the task then converts the images) or build the task with "
                f"num_channels={channels!r}"
            )
        size = getattr(config, "image_size", None)
        if size is None:
            return
        expected = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if tuple(self.image_size) != expected:
            raise ModelError(
                f"the image processor makes {self.image_size[0]}x{self.image_size[1]} images but "
                f"{who} takes {expected[0]}x{expected[1]} (config.image_size = {size!r}); use the "
                "model's own image processor (its folder's preprocessor_config.json)"
            )

    def load_model(self, name_or_path: str, **kwargs: Any) -> PreTrainedModel:
        """Load ``AutoModelForImageClassification`` with this task's labels in its config.

        A head whose ``id2label`` names other classes (or another count) is replaced by a new
        one (``ignore_mismatched_sizes``).

        The images are re-encoded for the model's ``config.num_channels`` first
        (:meth:`use_channels`).

        Raises:
            ModelError: If the model's image size differs from the processor's.
            DataError: If its channel count is not 1 or 3, or the processor normalises another.
        """
        config = kwargs.pop("config", None)
        if config is None:
            config = AutoConfig.from_pretrained(name_or_path)
        channels = getattr(config, "num_channels", None)
        if channels is not None:
            self.use_channels(channels, who=repr(str(name_or_path)))
        names = [str(n) for _, n in sorted(getattr(config, "id2label", {}).items())]
        fresh = names != self.labels
        if fresh:
            config.num_labels = self.num_labels
            config.id2label = dict(enumerate(self.labels))
            config.label2id = dict(self.label_to_id)
        kwargs.setdefault("ignore_mismatched_sizes", fresh)
        model: PreTrainedModel = AutoModelForImageClassification.from_pretrained(
            name_or_path, config=config, **kwargs
        )
        self.check_model(model)
        return model

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, *, batch_size: int = 64, progress: bool = True
    ) -> dict[str, float]:
        """Dev accuracy and mean cross-entropy loss over all dev images."""
        return _dev_accuracy(
            self.dev_features, self.collate, model, batch_size, progress, "image classification"
        )


def _check_channels(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in CHANNELS:
        raise DataError(
            f"{what} is {value!r}: images can be converted to 1 channel (greyscale, 'L') or 3 "
            "(RGB) only; use a model with num_channels 1 or 3"
        )
    return value


def _mean_values(processor: Any) -> list[float] | None:
    mean = getattr(processor, "image_mean", None)
    if isinstance(mean, list | tuple):
        return [float(m) for m in mean]
    return None


def _processor_channels(processor: Any) -> int:
    """1 or 3 from the length of the processor's ``image_mean``; 3 when it does not say."""
    mean = _mean_values(processor)
    return len(mean) if mean is not None and len(mean) in CHANNELS else 3


def _check_processor_channels(processor: Any, channels: int) -> None:
    """A processor that normalises a channel count other than the images' is refused."""
    if not getattr(processor, "do_normalize", False):
        return
    for attr in ("image_mean", "image_std"):
        values = getattr(processor, attr, None)
        if isinstance(values, list | tuple) and len(values) != channels:
            raise DataError(
                f"the image processor {type(processor).__name__} normalises {len(values)} "
                f"channel(s) ({attr}={list(values)}) but the images have {channels} (the "
                f"model's config.num_channels); give the processor {channels} value(s) of "
                "image_mean and image_std (its preprocessor_config.json)"
            )


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """``H×W×channels`` ``uint8`` (float images in [0, 1] scaled by 255).

    Colour → grey by Pillow's ``"L"`` (ITU-R 601-2 luma, integer arithmetic), grey → RGB by
    repetition.
    """
    if not np.issubdtype(image.dtype, np.integer):
        image = np.clip(np.rint(image.astype(np.float64) * 255.0), 0, 255)
    image = image.astype(np.uint8)
    if image.shape[-1] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=-1)
    rgb = image.astype(np.uint32)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., None]
