"""The tasks obert-deploy can export: Hugging Face head class and ONNX output names per task.

Text tasks take token inputs (``input_ids``, ``attention_mask``, ``token_type_ids``);
``image-classification`` takes ``pixel_values`` (any HF image classifier: ViT, DeiT, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import UnsupportedTaskError

__all__ = ["TASKS", "TaskSpec", "get_task"]


@dataclass(frozen=True)
class TaskSpec:
    """How one task maps onto a Hugging Face model class and ONNX graph outputs.

    Attributes:
        name: CLI name of the task, e.g. ``"sequence-classification"``.
        auto_class: Name of the ``transformers`` auto class that loads the checkpoint.
        output_names: Keys of the model output that become the ONNX graph outputs, in order.
    """

    name: str
    auto_class: str
    output_names: tuple[str, ...]


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("sequence-classification", "AutoModelForSequenceClassification", ("logits",)),
        TaskSpec(
            "question-answering", "AutoModelForQuestionAnswering", ("start_logits", "end_logits")
        ),
        TaskSpec("masked-lm", "AutoModelForMaskedLM", ("logits",)),
        TaskSpec("feature-extraction", "AutoModel", ("last_hidden_state",)),
        TaskSpec("image-classification", "AutoModelForImageClassification", ("logits",)),
    )
}


def get_task(name: str) -> TaskSpec:
    """Return the :class:`TaskSpec` called ``name``.

    Args:
        name: CLI task name, e.g. ``"question-answering"``.

    Returns:
        The task's head class and ONNX output names.

    Raises:
        UnsupportedTaskError: ``name`` is not a known task; the message lists the known ones.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise UnsupportedTaskError(
            f"unsupported task {name!r}; choose one of {', '.join(sorted(TASKS))}"
        ) from None
