"""Tasks: tokenised training features, batching, and the dev-set metric of each task.

A :class:`Task` owns everything task-specific the pruner needs: the training features the gradient
sampler draws mini-batches from (with hard labels, so ``model(**batch).loss`` is the task loss),
the model class to load, and ``evaluate`` computing the task metric on the dev set.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from obert_train.errors import DataError, OptionError
from obert_train.tasks.data import ClassificationExample
from obert_train.tasks.names import SST2_LABELS

__all__ = ["ClassificationTask", "Feature", "Task"]

Feature = dict[str, Any]
"""One tokenised example: lists of token ids plus label fields."""


class Task(abc.ABC):
    """A supervised task: training features with labels and a dev-set metric.

    Attributes:
        name: Task name as used on the command line.
        primary_metric: Key of the headline metric in :meth:`evaluate`'s result.
        higher_is_better: Whether a larger primary metric is better (False for perplexity).
        tokenizer: The tokenizer that produced the features.
        train_features: Tokenised training examples (the gradient sampler's data).
    """

    name: str = "task"
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True

    def __init__(self, tokenizer: PreTrainedTokenizerBase, train_features: list[Feature]) -> None:
        if not train_features:
            raise DataError(f"task {self.name!r}: no training features")
        self.tokenizer = tokenizer
        self.train_features = train_features

    @abc.abstractmethod
    def load_model(self, name_or_path: str, **kwargs: Any) -> PreTrainedModel:
        """Load a model with the head this task trains (``from_pretrained``)."""

    @abc.abstractmethod
    def evaluate(
        self, model: torch.nn.Module, *, batch_size: int = 64, progress: bool = True
    ) -> dict[str, float]:
        """Compute the dev-set metrics of ``model`` (which is left in eval mode)."""

    def collate(self, features: Sequence[Feature]) -> dict[str, torch.Tensor]:
        """Pad a list of features into a batch of tensors (dynamic padding)."""
        batch = self.tokenizer.pad(list(features), return_tensors="pt")
        return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def train_loader(
        self, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = True
    ) -> DataLoader[Feature]:
        """A loader over the training features yielding padded batches with labels."""
        if batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size > len(self.train_features):
            raise DataError(
                f"batch_size {batch_size} exceeds the {len(self.train_features)} training "
                "features; lower the batch size or provide more data"
            )
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            self.train_features,  # type: ignore[arg-type]
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            collate_fn=self.collate,
            generator=generator,
        )

    def infinite_batches(
        self, batch_size: int, *, seed: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield shuffled training batches forever, reshuffling at each pass (as SparseML)."""
        epoch = 0
        while True:
            yield from self.train_loader(batch_size, shuffle=True, seed=seed + epoch)
            epoch += 1


def _batches(
    items: Sequence[Any],
    batch_size: int,
    collate: Any,
    desc: str,
    progress: bool,
    model: torch.nn.Module | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Evaluation batches in order, on the device of ``model``'s parameters."""
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    starts = range(0, len(items), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        yield {k: v.to(device) for k, v in collate(items[start : start + batch_size]).items()}


def _dev_accuracy(
    features: Sequence[Feature],
    collate: Any,
    model: torch.nn.Module,
    batch_size: int,
    progress: bool,
    what: str,
) -> dict[str, float]:
    """Accuracy (argmax of the logits) and mean cross-entropy loss over the dev ``features``.

    ``what`` names the task in the error raised when there is nothing to evaluate.
    """
    if not features:
        raise DataError(f"{what}: no dev examples to evaluate on")
    model.eval()
    correct, loss_sum = 0, 0.0
    for batch in _batches(features, batch_size, collate, "eval", progress, model):
        out = model(**batch)
        correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
        loss_sum += float(out.loss) * len(batch["labels"])
    n = len(features)
    return {"accuracy": correct / n, "loss": loss_sum / n, "num_examples": float(n)}


class ClassificationTask(Task):
    """Sentence (pair) classification from GLUE-style examples; metric: dev accuracy.

    Args:
        tokenizer: Tokenizer of the model.
        train: Training examples.
        dev: Dev examples (may be empty if only pruning without evaluation).
        max_seq_length: Truncation length in tokens.
        labels: The allowed label strings in id order (SST-2: ``("0", "1")``); default: the
            sorted labels of ``train`` (GLUE ``0``/``1`` stay in numeric order); task ``sst2``:
            ``("0", "1")``.
        name: Task name (``"sst2"``, ``"glue-tsv"``, ...).

    The label policy (``docs/train.md``, "Labels"): every training and dev row's label must be
    one of ``labels`` (dev rows: one of the training file's labels), else a
    :class:`~obert_train.DataError` names the file, the line and the allowed set; the label
    names are saved in the model config's ``id2label`` / ``label2id`` by :meth:`load_model`,
    which adopts the ids of a checkpoint whose head already names them.

    Raises:
        DataError: If a row's label is outside the allowed set.
    """

    name: str = "glue-tsv"
    primary_metric: ClassVar[str] = "accuracy"

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        train: Sequence[ClassificationExample],
        dev: Sequence[ClassificationExample],
        *,
        max_seq_length: int = 128,
        labels: Sequence[str] | None = None,
        name: str = "glue-tsv",
    ) -> None:
        self.name = name
        if max_seq_length < 8:
            raise DataError(
                f"max_seq_length (--max-seq-length) {max_seq_length}: must be at least 8 tokens"
            )
        if not train:
            raise DataError("classification task: no training examples")
        if labels is None and name == "sst2":
            labels = SST2_LABELS
        self._fixed = labels is not None
        self._bound = False
        self.labels = list(labels) if labels is not None else _sorted_labels(train)
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}
        self.max_seq_length = max_seq_length
        self._tokenizer = tokenizer
        self._first_row = {e.label: e.where for e in reversed(train)}
        super().__init__(tokenizer, self._encode(train, "training"))
        self.dev_features = self._encode(dev, "dev")

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.labels)

    def _encode(self, examples: Sequence[ClassificationExample], split: str) -> list[Feature]:
        if not examples:
            return []
        bad = next((e for e in examples if e.label not in self.label_to_id), None)
        if bad is not None:
            count = sum(e.label not in self.label_to_id for e in examples)
            allowed = (
                f"task {self.name!r} allows only the labels {self.labels}"
                if self._fixed
                else f"the training file's labels are {self.labels}; dev labels must be among them"
            )
            raise DataError(
                f"{bad.where}: label {bad.label!r} is not allowed: {allowed} "
                f"({count} {split} row(s) outside the set); fix or remove the row"
                + ("" if self._fixed else ", or pass the matching training file")
            )
        pair = examples[0].text_b is not None
        enc = self._tokenizer(
            [e.text_a for e in examples],
            [e.text_b or "" for e in examples] if pair else None,
            truncation=True,
            max_length=self.max_seq_length,
        )
        features: list[Feature] = []
        for i, example in enumerate(examples):
            feature = {key: enc[key][i] for key in enc}
            feature["labels"] = self.label_to_id[example.label]
            features.append(feature)
        return features

    def load_model(self, name_or_path: str, **kwargs: Any) -> PreTrainedModel:
        """Load ``AutoModelForSequenceClassification`` with this task's labels in its config.

        A checkpoint with a classification head whose ``label2id`` names every task label
        keeps its ids (the features are relabelled to them); one with other (or default
        ``LABEL_i``) names must have as many classes as the task, matched by position; a
        checkpoint without a head gets a new one whose ``id2label`` / ``label2id`` are the
        task's labels (``docs/train.md``, "Labels").

        Raises:
            DataError: If the head has another number of classes than the task's labels,
                naming the first row of each label the head cannot hold; or names them with
                other ids than the model loaded before it (a student and its teacher).
        """
        config = kwargs.pop("config", None)
        if config is None:
            config = AutoConfig.from_pretrained(name_or_path)
        if _has_head(config):
            self._adopt_head(config, name_or_path)
        else:
            config.num_labels = self.num_labels
            config.id2label = dict(enumerate(self.labels))
            config.label2id = dict(self.label_to_id)
        model: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, config=config, **kwargs
        )
        self._bound = True  # the label ids are fixed: a later model (a teacher) must share them
        return model

    def _adopt_head(self, config: Any, name_or_path: str) -> None:
        """Match the task's labels to an existing head (ids, names), or refuse naming rows."""
        names = {int(i): str(n) for i, n in config.id2label.items()}
        by_name = {n: i for i, n in names.items()}
        if set(self.labels) <= set(by_name) and len(by_name) == len(names):
            old = list(self.labels)
            mapping = {i: by_name[label] for i, label in enumerate(old)}
            if self._bound and any(i != j for i, j in mapping.items()):
                raise DataError(
                    f"the head of {name_or_path} gives the labels other ids ({by_name}) than "
                    f"the model loaded first for this task ({self.label_to_id}); a student and "
                    "its teacher must use the same label ids: start both from checkpoints "
                    "trained on the same labels"
                )
            self.labels = [names[i] for i in range(len(names))]
            self.label_to_id = {label: i for i, label in enumerate(self.labels)}
            for features in (self.train_features, self.dev_features):
                for feature in features:
                    feature["labels"] = mapping[feature["labels"]]
            return
        if len(names) != self.num_labels:
            outside = [
                label
                for label in self.labels
                if not (_is_int(label) and 0 <= int(label) < len(names))
            ] or self.labels
            rows = "; ".join(
                f"{label!r} first at {self._first_row[label]}"
                for label in outside
                if label in self._first_row
            )
            raise DataError(
                f"the head of {name_or_path} has {len(names)} classes "
                f"({sorted(names.values())}) and does not fit task {self.name!r} "
                f"({self.num_labels} labels): the training data have the labels {self.labels}: "
                f"{rows}; fix those rows, or start from a model without a head (a base checkpoint)"
            )
        if all(n == f"LABEL_{i}" for i, n in names.items()):
            config.id2label = dict(enumerate(self.labels))
            config.label2id = dict(self.label_to_id)

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, *, batch_size: int = 64, progress: bool = True
    ) -> dict[str, float]:
        """Dev accuracy and mean cross-entropy loss over all dev examples."""
        return _dev_accuracy(
            self.dev_features, self.collate, model, batch_size, progress, "classification task"
        )


def _has_head(config: Any) -> bool:
    """Whether a checkpoint's config says it was saved with a sequence-classification head."""
    architectures = getattr(config, "architectures", None) or []
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def _sorted_labels(examples: Sequence[ClassificationExample]) -> list[str]:
    labels = {e.label for e in examples}
    if all(_is_int(label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
