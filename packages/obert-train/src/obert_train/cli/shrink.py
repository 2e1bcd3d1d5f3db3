"""``obert-train shrink MODEL``: a structurally pruned checkpoint with smaller tensors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any

import typer

from obert_train.cli.common import USER_ERRORS, ProgressOpt, fail
from obert_train.cli.drop_layers import _check_output, _load
from obert_train.cli.models import check_model_source, load_tokenizer
from obert_train.outputs import locked_output

__all__ = ["shrink_command"]


def shrink_command(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="A structurally pruned checkpoint (an obert-train run or oneshot folder).",
        ),
    ],
    output_dir: Annotated[Path, typer.Option(help="New folder for the smaller checkpoint.")],
    pad_to_widest: Annotated[
        bool,
        typer.Option(
            help="Layers that kept different numbers of FFN neurons: cut every layer to the "
            "widest one (the others keep zero neurons) instead of refusing."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier checkpoint in --output-dir.")
    ] = False,
    progress: ProgressOpt = True,
) -> None:
    """Write MODEL with its removed FFN neurons (and heads, where the config can say so) gone.

    The config gets the smaller intermediate_size (and num_attention_heads for models with a
    head_dim, such as LLaMA), the tensors those shapes: plain
    AutoModelFor...from_pretrained(OUTPUT_DIR) loads it, with the outputs of MODEL (checked
    before writing).  Every layer must keep the same number of neurons (structured pruning with
    allocation: uniform), or pass --pad-to-widest.  BERT-like models keep their heads'
    zeros (transformers 5 ties the head size to hidden_size / num_attention_heads); obert-deploy
    export removes them from the ONNX graph.  Writes shrink.json (sizes before and after).
    """
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        _check_output(output_dir, model, overwrite)
        check_model_source(model, "MODEL")
        tokenizer = load_tokenizer(model, "MODEL")
        net = _load(model)
        report = _shrink(net, pad_to_widest)  # every check before the folder is touched
        with locked_output(output_dir, "obert-train shrink"):
            _check_output(output_dir, model, overwrite)  # again, now that this run holds it
            _write(net, output_dir, tokenizer, {"source": model, **report})
    except USER_ERRORS as exc:
        raise fail(exc) from exc
    before, after = report["intermediate_size"]["before"], report["intermediate_size"]["after"]
    params, heads = report["parameters"], report["num_attention_heads"]
    if report["heads"] == "removed":
        attention = f"num_attention_heads {heads['before']} -> {heads['after']}"
    elif report["heads"] == "every head is kept":
        attention = "every head kept"
    else:
        attention = f"removed heads kept as zeros ({report['heads'].split(';')[0]}; shrink.json)"
    typer.echo(
        f"{report['ffn_field']} {before} -> {after}, {attention}; parameters "
        f"{params['before']:,} -> {params['after']:,}; checkpoint in {output_dir}"
    )


def _shrink(net: Any, pad: bool) -> dict[str, Any]:
    from obert_train.shrink import check_same_outputs, shrink_model

    padded = copy.deepcopy(net).eval()
    net.eval()
    report = shrink_model(net, pad=pad)
    report["max_output_difference"] = check_same_outputs(net, padded)
    return report


def _write(net: Any, out: Path, tokenizer: Any, report: dict[str, Any]) -> None:
    from obert_train.shrink import save_shrunk

    save_shrunk(net, out, report, tokenizer=tokenizer)
