"""Image classification dev data for :func:`obert_deploy.evaluate`: class folders or ``.npz``.

obert-deploy's own reader (obert-deploy never imports obert-train), of the layout both packages
share (:data:`obert_core.shared.IMAGE_EXTENSIONS`, :data:`obert_core.shared.IMAGE_NPZ_KEYS`):

* an ``.npz`` file holding ``images`` (``N×H×W×C`` or ``N×C×H×W``, ``uint8`` or float in
  [0, 1]), ``labels`` (``N`` class ids) and optionally ``label_names``;
* a folder holding ``dev.npz``, or ``dev/<class>/<image>``, or ``<class>/<image>`` directly
  (reading image files needs Pillow).

Class names (folder names, ``label_names[id]``, or the id as text) become the model's class ids
through its ``config.id2label``; images become ``pixel_values`` through the checkpoint's image
processor, as obert-train's image task makes them (``H×W×3`` ``uint8``, one channel repeated,
float images scaled by 255).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from obert_core.shared import IMAGE_EXTENSIONS, IMAGE_NPZ_KEYS, eval_subset

from .._errors import MissingDependencyError, ObertDeployError, brief

__all__ = ["ImageDataset", "image_label_ids", "image_pixels", "read_images"]

_IMAGES, _LABELS, _NAMES = IMAGE_NPZ_KEYS


@dataclass
class ImageDataset:
    """Dev images and their class names.

    Attributes:
        images: ``H×W×C`` arrays, all of one size.
        classes: The class name of each image.
        source: Where they were read from (for messages and reports).
    """

    images: list[np.ndarray]
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.images)


def _read_npz(file: Path) -> tuple[list[np.ndarray], list[str]]:
    try:
        with np.load(file, allow_pickle=False) as arrays:
            data = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as exc:
        raise ObertDeployError(f"{str(file)!r} is not a NumPy .npz file ({brief(exc)})") from None
    missing = [key for key in (_IMAGES, _LABELS) if key not in data]
    if missing:
        raise ObertDeployError(
            f"{str(file)!r} has no {missing}; an image .npz holds {_IMAGES!r} (N x H x W x C) "
            f"and {_LABELS!r} (N class ids), got keys {sorted(data)}"
        )
    images, labels = data[_IMAGES], data[_LABELS]
    if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ObertDeployError(
            f"{str(file)!r}: images of shape {list(images.shape)} and labels of shape "
            f"{list(labels.shape)}; need images N x H x W x C (or N x C x H x W) and N labels"
        )
    if images.shape[-1] not in (1, 3) and images.shape[1] in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    if images.shape[-1] not in (1, 3):
        raise ObertDeployError(
            f"{str(file)!r}: images of shape {list(images.shape)} have neither 1 nor 3 channels"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ObertDeployError(
            f"{str(file)!r}: labels must be whole class ids, got dtype {labels.dtype}"
        )
    names = [str(n) for n in data[_NAMES]] if _NAMES in data else None
    classes = []
    for i, label in enumerate(labels.tolist()):
        if names is not None and not 0 <= label < len(names):
            raise ObertDeployError(
                f"{str(file)!r}[{i}]: label {label} is not an index into the {len(names)} "
                f"label_names {names}"
            )
        classes.append(names[label] if names is not None else str(label))
    return list(images), classes


def _pillow() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError:
        raise MissingDependencyError(
            "reading image files needs Pillow: pip install pillow (or give the images as an "
            ".npz file)"
        ) from None


def _read_folder(root: Path) -> tuple[list[np.ndarray], list[str]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ObertDeployError(
            f"image folder {str(root)!r} has no class folders and no dev.npz; lay the dev images "
            "out as <folder>/<class>/<image> (or <folder>/dev/<class>/<image>), or pass an .npz"
        )
    image_module = _pillow()
    images: list[np.ndarray] = []
    classes: list[str] = []
    for folder in folders:
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise ObertDeployError(
                f"class folder {str(folder)!r} holds no image ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        for file in files:
            try:
                with image_module.open(file) as img:
                    images.append(np.asarray(img.convert("RGB")))
            except (OSError, ValueError) as exc:
                raise ObertDeployError(
                    f"{str(file)!r} is not a readable image ({brief(exc)})"
                ) from None
            classes.append(folder.name)
    return images, classes


def read_images(path: str | os.PathLike[str], *, max_samples: int | None = None) -> ImageDataset:
    """Read dev images from an ``.npz`` file or a folder (see the module docstring).

    Args:
        path: The ``.npz`` file, or a folder with ``dev.npz``, ``dev/<class>/`` or ``<class>/``.
        max_samples: Keep the first images only (the one subset rule,
            :func:`obert_core.shared.eval_subset`).

    Returns:
        The images, their class names and the source read.

    Raises:
        ObertDeployError: Missing path, a malformed ``.npz``, no class folder, an empty class
            folder, an unreadable image, no image, or images of mixed sizes (naming it).
        MissingDependencyError: Image files without Pillow.
    """
    root = Path(path)
    if root.is_dir():
        if (root / "dev.npz").is_file():
            root = root / "dev.npz"
        elif (root / "dev").is_dir():
            root = root / "dev"
    if root.is_file():
        images, classes = _read_npz(root)
    elif root.is_dir():
        images, classes = _read_folder(root)
    else:
        raise ObertDeployError(
            f"image data {str(root)!r} does not exist; pass an .npz file or a class-per-subfolder "
            "folder with --data"
        )
    if not images:
        raise ObertDeployError(f"no images in {str(root)!r}; pass a non-empty --data")
    keep = eval_subset(list(range(len(images))), max_samples)
    images = [images[i] for i in keep]
    classes = [classes[i] for i in keep]
    size = images[0].shape[:2]
    for i, image in enumerate(images):
        if image.shape[:2] != size:
            raise ObertDeployError(
                f"images of mixed sizes in {str(root)!r}: image {i} is {image.shape[1]}x"
                f"{image.shape[0]} (width x height) but image 0 is {size[1]}x{size[0]}; resize "
                "them to one size first"
            )
    return ImageDataset(images=images, classes=classes, source=str(root))


def image_label_ids(classes: list[str], config: Any, source: str) -> np.ndarray:
    """The model's class id of each class name, by its ``config.id2label``.

    A name that is one of the model's labels gets that label's id; otherwise a whole number
    below ``num_labels`` is taken as the id itself (``.npz`` files without ``label_names``, or
    class folders ``0``, ``1``, ... of a model with default ``LABEL_i`` names).

    Raises:
        ObertDeployError: A class name is neither (naming it and the model's labels).
    """
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    num_labels = int(getattr(config, "num_labels", 0) or len(id2label))
    by_name = {name: i for i, name in id2label.items()}
    ids = []
    for name in classes:
        if name in by_name:
            ids.append(by_name[name])
        elif name.isdigit() and int(name) < num_labels:
            ids.append(int(name))
        else:
            known = [id2label[i] for i in sorted(id2label)][:12]
            raise ObertDeployError(
                f"{source!r}: class {name!r} is not one of the model's {num_labels} labels "
                f"{known}; pass the dev images of the task the checkpoint was fine-tuned on"
            )
    return np.asarray(ids, dtype=np.int64)


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``H×W×3`` ``uint8``: float images in [0, 1] scaled by 255, one channel repeated."""
    if not np.issubdtype(image.dtype, np.integer):
        image = np.clip(np.rint(image.astype(np.float64) * 255.0), 0, 255)
    image = image.astype(np.uint8)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def image_pixels(
    processor: Any, images: list[np.ndarray], expected: tuple[int, int, int], source: str
) -> np.ndarray:
    """``pixel_values`` (``N×C×H×W`` float32) of ``images`` through the image ``processor``.

    Args:
        processor: The checkpoint's image processor (``AutoImageProcessor``).
        images: ``H×W×C`` images.
        expected: ``(channels, height, width)`` the model takes (its config).
        source: Where the processor came from (for messages).

    Raises:
        ObertDeployError: The processor fails, or makes images of another size than the model
            takes (naming both).
    """
    chunks = []
    for start in range(0, len(images), 64):
        batch = [_rgb_uint8(image) for image in images[start : start + 64]]
        try:
            pixels = processor(images=batch, return_tensors="np")["pixel_values"]
        except (ValueError, TypeError) as exc:
            raise ObertDeployError(
                f"the image processor of {source!r} ({type(processor).__name__}) failed on the "
                f"images ({brief(exc)})"
            ) from None
        chunks.append(np.asarray(pixels, dtype=np.float32))
    values = np.concatenate(chunks)
    if tuple(values.shape[1:]) != tuple(expected):
        raise ObertDeployError(
            f"the image processor of {source!r} makes images of shape {list(values.shape[1:])} "
            f"(C x H x W) but the model takes {list(expected)}; save the processor the model was "
            "trained with beside the checkpoint (or pass its folder with --tokenizer)"
        )
    return values
