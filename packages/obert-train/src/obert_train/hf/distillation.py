"""Knowledge-distillation loss of the oBERT recipes (Kurtic et al. 2022; Hinton et al. 2015).

``loss = (1 - hardness) * task_loss + hardness * KD`` with, per distilled output key
(``logits`` for classification, ``start_logits`` / ``end_logits`` for question answering),

    KD_key = T^2 * sum_rows KL( softmax(t / T) || softmax(s / T) ) / rows,

rows = ``numel / size(-1)``; KD is the mean over the keys (the authors' recipes, docs/recipes.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from obert_train.errors import TrainingError

__all__ = ["distillation_loss", "kd_divergence"]


def kd_divergence(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over rows.

    The KL is summed over the last dimension and averaged over the ``numel / size(-1)`` rows.

    Args:
        student: Student logits, any shape ``(..., C)``.
        teacher: Teacher logits of the same shape.
        temperature: T > 0.

    Returns:
        A scalar tensor (0 when the logits agree).

    Raises:
        TrainingError: If the shapes differ (a teacher with another head or vocabulary).
    """
    if student.shape != teacher.shape:
        raise TrainingError(
            f"student output of shape {tuple(student.shape)} cannot be distilled from a teacher "
            f"output of shape {tuple(teacher.shape)}; the teacher needs the student's head "
            "(same task, same number of labels)"
        )
    rows = student.numel() // student.shape[-1]
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="sum", log_target=True)
    return kl * (temperature**2) / rows


def _get(outputs: Any, key: str, who: str) -> torch.Tensor:
    value = outputs.get(key) if isinstance(outputs, Mapping) else getattr(outputs, key, None)
    if value is None:
        have = sorted(outputs.keys()) if isinstance(outputs, Mapping) else []
        raise TrainingError(
            f"the {who} output has no {key!r} to distill (distill_output_keys); it has {have}"
        )
    return value  # type: ignore[no-any-return]


def distillation_loss(
    student_outputs: Any,
    teacher_outputs: Any,
    *,
    task_loss: torch.Tensor | None,
    hardness: float,
    temperature: float,
    output_keys: Sequence[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The combined loss and its KD part.

    Args:
        student_outputs: Model outputs (a ``ModelOutput`` or mapping) with the keys.
        teacher_outputs: Teacher outputs with the same keys.
        task_loss: The student's own loss (hard labels); may be None when ``hardness == 1``.
        hardness: Weight of the KD term in [0, 1] (1.0 = pure distillation, the oBERT recipes).
        temperature: T > 0.
        output_keys: The outputs to distill.

    Returns:
        ``(loss, kd)``.

    Raises:
        TrainingError: If a key is missing, the shapes differ or a task loss is needed but absent.
    """
    kd = torch.stack(
        [
            kd_divergence(
                _get(student_outputs, key, "student"),
                _get(teacher_outputs, key, "teacher"),
                temperature,
            )
            for key in output_keys
        ]
    ).mean()
    if hardness >= 1.0:
        return kd, kd
    if task_loss is None:
        raise TrainingError(
            f"hardness {hardness} < 1 mixes in the task loss, but the student returned none; "
            "the batches need labels"
        )
    return (1.0 - hardness) * task_loss + hardness * kd, kd
