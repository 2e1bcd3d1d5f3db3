"""Dev-set accuracy of ONNX models next to the PyTorch checkpoint, and the data behind it.

:func:`evaluate` (:class:`EvalReport`, :class:`EvalResult`; SQuAD v1.1 EM/F1 by
:func:`squad_scores`), the GLUE-TSV and SQuAD readers (:func:`read_glue_tsv`,
:func:`read_squad`), dev images from an ``.npz`` or class folders (:func:`read_images`,
:class:`ImageDataset`), tokenisation to fixed-shape feeds (:func:`tokenize`) and the default
datasets (:func:`default_dataset`: a data directory passed explicitly, else
``$OBERT_DATA_DIR``). Names load lazily: importing this package imports neither torch nor
transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

_EXPORTS: dict[str, str] = {
    "EVAL_TASKS": ".._choices",
    "EvalReport": "._evaluate",
    "EvalResult": "._evaluate",
    "evaluate": "._evaluate",
    "squad_scores": "obert_core.shared",  # the one SQuAD metric of every package
    "ImageDataset": "._images",
    "read_images": "._images",
    "QAExample": "._readers",
    "TextDataset": "._readers",
    "read_glue_tsv": "._readers",
    "read_squad": "._readers",
    "tokenize": "._tokenize",
    "DATA_DIR_ENV": "._datasets",
    "data_dir": "._datasets",
    "default_dataset": "._datasets",
}

__all__ = [
    "DATA_DIR_ENV",
    "EVAL_TASKS",
    "EvalReport",
    "EvalResult",
    "ImageDataset",
    "QAExample",
    "TextDataset",
    "data_dir",
    "default_dataset",
    "evaluate",
    "read_glue_tsv",
    "read_images",
    "read_squad",
    "squad_scores",
    "tokenize",
]

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

if TYPE_CHECKING:
    from obert_core.shared import squad_scores

    from .._choices import EVAL_TASKS
    from ._datasets import DATA_DIR_ENV, data_dir, default_dataset
    from ._evaluate import EvalReport, EvalResult, evaluate
    from ._images import ImageDataset, read_images
    from ._readers import QAExample, TextDataset, read_glue_tsv, read_squad
    from ._tokenize import tokenize
