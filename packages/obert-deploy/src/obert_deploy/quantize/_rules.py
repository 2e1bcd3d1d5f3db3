"""Which post-training options go with which method and engine (``obert-deploy quantize``).

An option that the chosen method does not read would be ignored silently; these rules refuse it
instead, naming the option and what to do, and build the method's config from the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._choices import PTQ_METHODS
from .._errors import ObertDeployError
from ._quantize import DynamicInt8Config, StaticInt8Config

__all__ = ["STATIC_ONLY_OPTIONS", "ptq_config"]

#: Options of ``quantize`` that only static quantization reads (parameter name -> flag).
STATIC_ONLY_OPTIONS = {
    "calibration_data": "--calibration-data",
    "tokenizer": "--tokenizer",
    "num_calibration": "--num-calibration",
    "allow_fewer_calibration": "--allow-fewer-calibration",
    "calibration_method": "--calibration-method",
    "quant_format": "--format",
    "seq_len": "--max-seq-length",
    "text_columns": "--text-column",
}


def _check_method(method: str, engine: str, static_only_given: Sequence[str]) -> None:
    """Refuse options that do not apply to ``method`` (they would be ignored)."""
    if method not in PTQ_METHODS:
        raise ObertDeployError(
            f"unknown quantization method {method!r}; choose one of {', '.join(PTQ_METHODS)}"
        )
    if method == "dynamic":
        if static_only_given:
            raise ObertDeployError(
                f"{', '.join(static_only_given)} only apply to --method static; add --method "
                "static or leave them out"
            )
        if engine == "deepsparse":
            raise ObertDeployError(
                "--engine deepsparse needs --method static: DeepSparse 1.8 cannot run dynamic "
                "quantization (MatMulInteger); pass --method static --calibration-data FILE.tsv "
                "--tokenizer CHECKPOINT_DIR"
            )


def ptq_config(
    method: str,
    engine: str,
    *,
    static_only_given: Sequence[str] = (),
    per_channel: bool | None = None,
    reduce_range: bool | None = None,
    embedding_bits: int = 8,
    calibration_method: str = "minmax",
    quant_format: str | None = None,
) -> DynamicInt8Config | StaticInt8Config:
    """The config of post-training ``method`` for ``engine``, after checking the options fit.

    Args:
        method: ``dynamic`` or ``static`` (see :data:`~obert_deploy.quantize.PTQ_METHODS`).
        engine: Engine the quantized model is for.
        static_only_given: Flags of :data:`STATIC_ONLY_OPTIONS` the user set.
        per_channel: Weight scale granularity; ``None``: the method's / engine's default.
        reduce_range: 7-bit weights; ``None``: only on CPUs without VNNI.
        embedding_bits: 8, or 4 (dynamic only).
        calibration_method: Static calibration method.
        quant_format: Static format; ``None``: the engine's default.

    Returns:
        A :class:`~obert_deploy.DynamicInt8Config` or :class:`~obert_deploy.StaticInt8Config`.

    Raises:
        ObertDeployError: An unknown method, a static-only option with ``dynamic``,
            ``dynamic`` for DeepSparse, 4-bit embeddings with ``static``, or a value the config
            refuses.
    """
    _check_method(method, engine, static_only_given)
    if method == "dynamic":
        return DynamicInt8Config(
            per_channel=True if per_channel is None else per_channel,
            reduce_range=reduce_range,
            embedding_bits=embedding_bits,
        )
    if embedding_bits != 8:
        raise ObertDeployError(
            f"--embedding-bits {embedding_bits} needs --method dynamic (static quantization "
            "keeps int8 or fp32 embeddings)"
        )
    overrides: dict[str, Any] = {
        "reduce_range": reduce_range,
        "calibration_method": calibration_method,
    }
    if per_channel is not None:
        overrides["per_channel"] = per_channel
    if quant_format is not None:
        overrides["quant_format"] = quant_format
    return StaticInt8Config.for_engine(engine, **overrides)
