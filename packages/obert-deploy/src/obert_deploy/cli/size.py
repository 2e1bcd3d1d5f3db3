"""``obert-deploy size``: file, gzip, sparse and CSR sizes of ONNX models, and the ratio to fp32."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._errors import ObertDeployError
from .common import JsonOpt, OverwriteOpt, check_outputs, fail, write_json

__all__ = ["size"]


def size(
    models: Annotated[list[Path], typer.Argument(help="ONNX models.")],
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Dense fp32 ONNX model for the ratio.")
    ] = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """File, gzip, sparse-bitmask and CSR sizes, and the ratio vs dense fp32."""
    from ..size._size import size_report, size_table_markdown

    check_outputs([("--json", json_path, None)], [*models, reference], overwrite=overwrite)
    try:
        reports = [size_report(model, reference=reference) for model in models]
    except ObertDeployError as exc:
        fail(exc)
    typer.echo(size_table_markdown(reports))
    write_json(json_path, [r.to_dict() for r in reports])
