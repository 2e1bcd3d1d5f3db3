"""``obert-train drop-layers MODEL``: a smaller checkpoint with only some of the model's layers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from obert_train.cli.common import USER_ERRORS, ProgressOpt, fail
from obert_train.cli.models import check_model_source, load_tokenizer
from obert_train.errors import ModelError, OptionError, OutputDirError
from obert_train.outputs import locked_output

__all__ = ["drop_layers_command", "parse_keep"]

REPORT_FILE = "drop_layers.json"


def parse_keep(value: str) -> list[int]:
    """``"0,2,4"`` -> ``[0, 2, 4]`` (range and order are checked against the model later).

    Raises:
        OptionError: Naming the value if it is empty or not comma-separated whole numbers.
    """
    if not value.strip():
        raise OptionError("--keep is empty: name the layers to keep, e.g. --keep 0,2,4")
    parts = [p.strip() for p in value.split(",")]
    if not all(p.lstrip("-").isdigit() for p in parts):
        raise OptionError(f"--keep {value!r}: expected comma-separated layer numbers such as 0,2,4")
    return [int(p) for p in parts]


def _check_output(out: Path, model: str, overwrite: bool) -> None:
    """A new or empty folder; with ``overwrite`` an earlier checkpoint, never the input model."""
    from obert_train.checkpoint import check_output_dir
    from obert_train.outputs import check_not_input

    check_output_dir(out)
    # An output that is, holds or lies inside the input model is refused (docs/train.md).
    check_not_input(out, {"model's folder (MODEL)": model})
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    if not overwrite:
        raise OutputDirError(
            f"--output-dir {str(out)!r} is not empty ({shown}); pass --overwrite to replace "
            "it or choose a new folder"
        )
    if not (out / "config.json").is_file():
        raise OutputDirError(
            f"--output-dir {str(out)!r} holds files but no checkpoint ({shown}); --overwrite "
            "replaces only a model folder (with config.json): choose a new folder"
        )


def _load(model: str) -> Any:
    """The model with its own head class (``config.architectures``), else the base model."""
    import transformers

    from obert_train.cli.models import _load_error

    try:
        config = transformers.AutoConfig.from_pretrained(model)
        names = list(getattr(config, "architectures", None) or [])
        cls = getattr(transformers, names[0], None) if names else None
        if cls is None:
            return transformers.AutoModel.from_pretrained(model)
        return cls.from_pretrained(model)
    except Exception as exc:
        error = _load_error(exc, model, "MODEL")
        if error is None:
            raise
        raise error from None


def drop_layers_command(
    model: Annotated[
        str, typer.Argument(metavar="MODEL", help="Model folder or hub id (with its task head).")
    ],
    output_dir: Annotated[Path, typer.Option(help="New folder for the smaller checkpoint.")],
    keep: Annotated[
        str | None,
        typer.Option(metavar="0,2,4", help="Layers kept, increasing, numbered from 0."),
    ] = None,
    num_layers: Annotated[
        int | None,
        typer.Option(
            metavar="K",
            help="Instead of --keep: K evenly spaced layers, ending with the top one "
            "(6 -> 3 keeps 1,3,5).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier checkpoint in --output-dir.")
    ] = False,
    progress: ProgressOpt = True,
) -> None:
    """Write a checkpoint of MODEL with only some of its layers (config updated).

    The kept layers' weights are unchanged; the outputs equal those of running only the kept
    layers of MODEL.  Distil it from MODEL next: obert-train run with a recipe that has a
    !DistillationModifier and --teacher MODEL.  Writes drop_layers.json (kept layers,
    original count) next to the weights and the tokenizer.
    """
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        if keep is not None and num_layers is not None:
            raise OptionError(
                "--keep and --num-layers both given: name the layers (--keep 0,2,4) or how "
                "many evenly spaced ones (--num-layers 3), not both"
            )
        if keep is None and num_layers is None:
            raise OptionError("give --keep 0,2,4 (the layers kept) or --num-layers K")
        indices = parse_keep(keep) if keep is not None else None
        _check_output(output_dir, model, overwrite)
        check_model_source(model, "MODEL")
        tokenizer = load_tokenizer(model, "MODEL")
        with locked_output(output_dir, "obert-train drop-layers"):
            _check_output(output_dir, model, overwrite)  # again, now that this run holds it
            _run(model, output_dir, indices, num_layers, tokenizer)
    except USER_ERRORS as exc:
        raise fail(exc) from exc


def _run(
    model: str, out: Path, keep: list[int] | None, num_layers: int | None, tokenizer: Any
) -> None:
    import re

    from obert_train.checkpoint import json_text, save_checkpoint
    from obert_train.layers import drop_layers, evenly_spaced_layers, find_layers

    net = _load(model)
    name, layers = find_layers(net)
    original = len(layers)
    drop_layers(net, keep, num_layers=num_layers)
    kept = list(keep) if keep is not None else evenly_spaced_layers(original, num_layers or 0)
    weights = [
        rf"^{re.escape(n)}$"
        for n, p in net.named_parameters()
        if n.startswith(name + ".") and p.dim() == 2
    ]
    if not weights:
        raise ModelError(f"{name} of {model!r} holds no weight matrices to report")
    report = {
        "source": model,
        "layer_list": name,
        "original_num_layers": original,
        "num_layers": len(kept),
        "kept_layers": kept,
        "dropped_layers": [i for i in range(original) if i not in kept],
        "rule": "--keep"
        if num_layers is None
        else f"--num-layers {num_layers}: evenly spaced, ceil((i+1)*{original}/{num_layers}) - 1",
    }
    save_checkpoint(
        net,
        out,
        tokenizer=tokenizer,
        patterns=weights,
        extra_files={REPORT_FILE: json_text(report) + "\n"},
    )
    typer.echo(
        f"kept layers {kept} of {original} ({name}), dropped {report['dropped_layers']}: "
        f"{len(kept)}-layer checkpoint in {out}"
    )
