"""Bad input to every ``obert-deploy`` command, as a new user would type it.

One table of cases per command: the arguments (with placeholders for the test files), the exit
code and a substring the error must contain (the bad value or the remedy). Every case must fail
with exactly one ``error: ...`` line, no traceback, before any expensive work, and leave the
output directory exactly as it was (nothing created, nothing replaced).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from obert_deploy.cli import app

runner = CliRunner()
SEQ_LEN = 16  # the fixtures' sequence length (conftest.SEQ_LEN)

# Placeholders: {CKPT} tiny classifier (64 positions), {QA} tiny QA model, {NAN_CKPT} the
# classifier with a NaN weight, {STATIC} 2 x 16 export, {DYN} dynamic export, {INT8} static
# int8 export, {NAN_ONNX} dynamic export with a NaN initializer, {BAD}/... files of bad inputs,
# {OUT} an empty output directory, {EXISTING} a file already in it.
EXPORT = [
    ("missing-ckpt", ["export", "{BAD}/no-such-ckpt", "-o", "{OUT}/m.onnx"], "does not exist"),
    ("mistyped-local-path", ["export", "ckpts/run-1", "-o", "{OUT}/m.onnx"], "does not exist"),
    ("empty-ckpt-dir", ["export", "{BAD}/empty_dir", "-o", "{OUT}/m.onnx"], "no config.json"),
    ("ckpt-is-file", ["export", "{CKPT}/config.json", "-o", "{OUT}/m.onnx"], "is a file"),
    ("corrupt-weights", ["export", "{BAD}/corrupt_ckpt", "-o", "{OUT}/m.onnx"], "could not load"),
    ("corrupt-config", ["export", "{BAD}/bad_config_ckpt", "-o", "{OUT}/m.onnx"], "could not load"),
    ("no-weights", ["export", "{BAD}/config_only", "-o", "{OUT}/m.onnx"], "has no weights"),
    ("nan-weights", ["export", "{NAN_CKPT}", "-o", "{OUT}/m.onnx"], "NaN/inf weights in 1 of"),
    ("output-missing", ["export", "{CKPT}"], "Missing option '--output'"),
    ("output-dot", ["export", "{CKPT}", "-o", "."], "'.' is a directory"),
    ("output-dir", ["export", "{CKPT}", "-o", "{OUT}"], "is a directory"),
    ("output-no-suffix", ["export", "{CKPT}", "-o", "{OUT}/model"], "does not end in .onnx"),
    ("output-exists", ["export", "{CKPT}", "-o", "{EXISTING_ONNX}"], "--overwrite"),
    ("output-read-only", ["export", "{CKPT}", "-o", "/proc/obert/m.onnx"], "cannot write in"),
    (
        "json-is-output",
        ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--json", "{OUT}/m.onnx"],
        "same file",
    ),
    ("json-exists", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--json", "{EXISTING}"], "exists"),
    ("task", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--task", "ner"], "'ner' is not one of"),
    ("engine", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--engine", "trt"], "'trt' is not one"),
    ("opset-low", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--opset", "12"], "opset 12 is not"),
    ("opset-high", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--opset", "25"], "use 14..21"),
    (
        "opset-deepsparse",
        ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--engine", "deepsparse", "--opset", "20"],
        "too new for --engine deepsparse",
    ),
    ("batch-0", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--batch-size", "0"], "0 is below 1"),
    ("batch-neg", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--batch-size", "-3"], "-3 is below"),
    (
        "batch-huge-dynamic",
        ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--batch-size", "5000"],
        "--batch-size 5000",
    ),
    ("seq-1", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--seq-len", "1"], "1 is below 2"),
    ("seq-text", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--seq-len", "long"], "'long'"),
    (
        "seq-too-long",
        ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--seq-len", "65"],
        "sequence length 65 (--max-seq-length) exceeds the 64 positions",
    ),
    ("atol-0", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--atol", "0"], "0.0 is not a finite"),
    ("atol-nan", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--atol", "nan"], "nan is not"),
    ("rtol-neg", ["export", "{CKPT}", "-o", "{OUT}/m.onnx", "--rtol", "-1"], ">= 0"),
]

_STATIC_BASE = ["quantize", "{STATIC}", "-o", "{OUT}/q.onnx", "--method", "static"]
QUANTIZE = [
    ("missing-model", ["quantize", "{BAD}/none.onnx", "-o", "{OUT}/q.onnx"], "does not exist"),
    ("model-is-dir", ["quantize", "{CKPT}", "-o", "{OUT}/q.onnx"], "is a directory"),
    ("corrupt-model", ["quantize", "{BAD}/corrupt.onnx", "-o", "{OUT}/q.onnx"], "cannot be parsed"),
    ("empty-model", ["quantize", "{BAD}/empty.onnx", "-o", "{OUT}/q.onnx"], "empty graph"),
    ("nan-model", ["quantize", "{NAN_ONNX}", "-o", "{OUT}/q.onnx"], "NaN/inf weights in 1 of"),
    ("quantized-model", ["quantize", "{INT8}", "-o", "{OUT}/q.onnx"], "already quantized"),
    ("output-exists", ["quantize", "{DYN}", "-o", "{EXISTING_ONNX}"], "--overwrite"),
    ("output-is-input", ["quantize", "{DYN}", "-o", "{DYN}"], "is also an input"),
    ("output-no-suffix", ["quantize", "{DYN}", "-o", "{OUT}/q"], "does not end in .onnx"),
    ("output-dir", ["quantize", "{DYN}", "-o", "{OUT}"], "is a directory"),
    ("method", ["quantize", "{DYN}", "-o", "{OUT}/q.onnx", "--method", "int3"], "'int3'"),
    ("format", ["quantize", "{DYN}", "-o", "{OUT}/q.onnx", "--format", "qx"], "'qx' is not one"),
    (
        "calibration-method",
        ["quantize", "{DYN}", "-o", "{OUT}/q.onnx", "--calibration-method", "kl"],
        "'kl' is not one of",
    ),
    ("bits-6", ["quantize", "{DYN}", "-o", "{OUT}/q.onnx", "--embedding-bits", "6"], "bits 6"),
    (
        "bits-static",
        [
            *_STATIC_BASE,
            "--calibration-data",
            "{TRAIN}",
            "--tokenizer",
            "{CKPT}",
            "--embedding-bits",
            "4",
        ],
        "--embedding-bits 4 needs --method dynamic",
    ),
    (
        "static-no-data",
        ["quantize", "{DYN}", "-o", "{OUT}/q.onnx", "--method", "static"],
        "needs --calibration-data",
    ),
    (
        "dynamic-with-data",
        ["quantize", "{DYN}", "-o", "{OUT}/q.onnx", "--calibration-data", "{TRAIN}"],
        "--calibration-data only apply to --method static",
    ),
    (
        "dynamic-deepsparse",
        ["quantize", "{DYN}", "-o", "{OUT}/q.onnx", "--engine", "deepsparse"],
        "--engine deepsparse needs --method static",
    ),
    (
        "num-calibration-0",
        ["quantize", "{DYN}", "-o", "{OUT}/q.onnx", "--num-calibration", "0"],
        "0 is below 1",
    ),
]
_STATIC = ["quantize", "{DYN}", "-o", "{OUT}/q.onnx", "--method", "static", "--seq-len", "16"]
_STATIC += ["--tokenizer"]
QUANTIZE += [
    ("calib-missing", [*_STATIC, "{CKPT}", "--calibration-data", "{BAD}/no.tsv"], "does not exist"),
    ("calib-dir", [*_STATIC, "{CKPT}", "--calibration-data", "{BAD}"], "is a directory"),
    ("calib-binary", [*_STATIC, "{CKPT}", "--calibration-data", "{BAD}/binary.tsv"], "UTF-8"),
    ("calib-json", [*_STATIC, "{CKPT}", "--calibration-data", "{SQUAD}"], "looks like JSON"),
    ("calib-columns", [*_STATIC, "{CKPT}", "--calibration-data", "{BAD}/cols.tsv"], "--text-col"),
    ("calib-empty", [*_STATIC, "{CKPT}", "--calibration-data", "{BAD}/header.tsv"], "no sentences"),
    ("tokenizer-missing", [*_STATIC, "{BAD}/nothing", "--calibration-data", "{TRAIN}"], "exist"),
    (
        "tokenizer-empty",
        [*_STATIC, "{BAD}/empty_dir", "--calibration-data", "{TRAIN}"],
        "no tokenizer files",
    ),
    (
        "calib-seq-too-long",
        [*_STATIC, "{CKPT}", "--calibration-data", "{TRAIN}", "--seq-len", "100"],
        "exceeds the 64 positions",
    ),
]

_QAT = ["qat", "{CKPT}", "-o", "{OUT}/q.onnx", "--steps", "1", "--batch-size", "4", "--seq-len"]
_QAT += ["16"]
QAT = [
    (
        "missing-ckpt",
        ["qat", "{BAD}/nope", "-o", "{OUT}/q.onnx", "--train-data", "{TRAIN}"],
        "exist",
    ),
    ("nan-ckpt", ["qat", "{NAN_CKPT}", "-o", "{OUT}/q.onnx", "--train-data", "{TRAIN}"], "NaN/inf"),
    ("data-missing", [*_QAT, "--train-data", "{BAD}/no.tsv"], "does not exist"),
    ("data-dir", [*_QAT, "--train-data", "{BAD}"], "is a directory"),
    ("data-no-label", [*_QAT, "--train-data", "{BAD}/nolabel.tsv"], "label column 'label'"),
    ("data-label-text", [*_QAT, "--train-data", "{BAD}/textlabel.tsv"], "'positive' is not an"),
    ("data-short-row", [*_QAT, "--train-data", "{BAD}/short.tsv"], "tab-separated fields"),
    ("data-binary", [*_QAT, "--train-data", "{BAD}/binary.tsv"], "is not UTF-8 text"),
    (
        "too-few-rows",
        [*_QAT, "--train-data", "{TRAIN}", "--max-train-samples", "2"],
        "fewer than --batch-size 4",
    ),
    ("steps-neg", [*_QAT, "--train-data", "{TRAIN}", "--steps", "-1"], "-1 is below 1"),
    ("lr-neg", [*_QAT, "--train-data", "{TRAIN}", "--lr", "-0.1"], "-0.1 is not a finite"),
    ("lr-inf", [*_QAT, "--train-data", "{TRAIN}", "--lr", "inf"], "inf is not a finite"),
    ("export-batch-0", [*_QAT, "--train-data", "{TRAIN}", "--export-batch-size", "0"], "below 1"),
    ("task", [*_QAT, "--train-data", "{TRAIN}", "--task", "question-answering"], "is not one of"),
    ("seq-too-long", [*_QAT, "--train-data", "{TRAIN}", "--seq-len", "80"], "exceeds the 64"),
    ("output-exists", ["qat", "{CKPT}", "-o", "{EXISTING_ONNX}"], "already exists"),
    ("output-suffix", ["qat", "{CKPT}", "-o", "{OUT}/q.json"], "does not end in .onnx"),
    ("output-is-data", [*_QAT, "--train-data", "{TRAIN}", "--json", "{TRAIN}"], "is also an input"),
]

_EVAL = ["evaluate", "{CKPT}", "{DYN}", "--seq-len", "16"]
_DEV16 = ["--data", "{DEV}", "--seq-len", "16"]
_SQ16 = ["--data", "{BAD}/sq.json", "--seq-len", "16"]
EVALUATE = [
    ("missing-ckpt", ["evaluate", "{BAD}/nope", "{DYN}", *_DEV16], "does not exist"),
    ("nan-ckpt", ["evaluate", "{NAN_CKPT}", "{DYN}", *_DEV16], "NaN/inf weights"),
    ("missing-model", ["evaluate", "{CKPT}", "{BAD}/no.onnx", *_DEV16], "does not exist"),
    ("model-is-dir", ["evaluate", "{CKPT}", "{CKPT}", *_DEV16], "is a directory"),
    ("corrupt-model", ["evaluate", "{CKPT}", "{BAD}/corrupt.onnx", *_DEV16], "cannot be parsed"),
    ("nan-model", ["evaluate", "{CKPT}", "{NAN_ONNX}", *_DEV16], "NaN/inf weights"),
    ("no-models", ["evaluate", "{CKPT}"], "Missing argument 'models'"),
    ("data-missing", [*_EVAL, "--data", "{BAD}/no.tsv"], "does not exist"),
    ("data-dir", [*_EVAL, "--data", "{BAD}"], "is a directory"),
    ("data-json", [*_EVAL, "--data", "{SQUAD}"], "--task question-answering"),
    ("data-no-label", [*_EVAL, "--data", "{BAD}/nolabel.tsv"], "label column 'label' not in"),
    ("data-binary", [*_EVAL, "--data", "{BAD}/binary.tsv"], "is not UTF-8 text"),
    ("data-header-only", [*_EVAL, "--data", "{BAD}/header.tsv"], "no examples"),
    ("labels-out-of-range", [*_EVAL, "--data", "{BAD}/label5.tsv"], "label 5 of example 2"),
    (
        "squad-is-tsv",
        ["evaluate", "{QA}", "{DYN}", "--task", "question-answering", *_DEV16],
        "is not JSON",
    ),
    (
        "squad-structure",
        ["evaluate", "{QA}", "{DYN}", "--task", "question-answering", *_SQ16],
        "no 'paragraphs' list",
    ),
    ("task", [*_EVAL, "--task", "masked-lm"], "'masked-lm' is not one of"),
    ("static-seq", ["evaluate", "{CKPT}", "{STATIC}", "--seq-len", "32"], "static shape [2, 16]"),
    ("seq-too-long", ["evaluate", "{CKPT}", "{DYN}", "--seq-len", "100"], "exceeds the 64"),
    ("batch-0", [*_EVAL, "--batch-size", "0"], "0 is below 1"),
    ("max-samples-0", [*_EVAL, "--max-samples", "0"], "0 is below 1"),
    ("threads-0", [*_EVAL, "--threads", "0"], "0 is below 1"),
    ("engine", [*_EVAL, "--engine", "tensorrt"], "'tensorrt' is not one of"),
    ("json-exists", [*_EVAL, "--json", "{EXISTING}"], "pass --overwrite"),
    ("json-dir", [*_EVAL, "--json", "{OUT}"], "is a directory"),
    ("json-is-data", [*_EVAL, "--data", "{DEV}", "--json", "{DEV}"], "is also an input"),
    ("json-no-suffix", [*_EVAL, "--json", "{OUT}/report"], "has no file extension"),
    (
        "onnx-other-task",
        ["evaluate", "{CKPT}", "{BAD}/qa_outputs.onnx", *_DEV16],
        "needs ['logits']",
    ),
    (
        "onnx-other-classes",
        ["evaluate", "{CKPT}", "{BAD}/three.onnx", *_DEV16],
        "predicts 3 classes",
    ),
    (
        "onnx-other-inputs",
        ["evaluate", "{CKPT}", "{BAD}/extra_input.onnx", *_DEV16],
        "['pixel_mask']",
    ),
    # --data given: these checks must not depend on the default SST-2 dev file being there.
    (
        "tokenizer-other-model",
        [*_EVAL, "--data", "{DEV}", "--tokenizer", "{BAD}/big_tok"],
        "vocabulary has 81 tokens",
    ),
    (
        "tokenizer-is-file",
        [*_EVAL, "--data", "{DEV}", "--tokenizer", "{DEV}"],
        "is a file, not a directory",
    ),
    ("text-columns-3", [*_EVAL, "--data", "{DEV}", "--text-columns", "a,b,c"], "3 text columns"),
]

BENCH = [
    ("missing-model", ["bench", "{BAD}/no.onnx"], "does not exist"),
    ("second-missing", ["bench", "{DYN}", "{BAD}/no.onnx", "--seq-len", "16"], "does not exist"),
    ("model-is-dir", ["bench", "{BAD}"], "is a directory"),
    ("corrupt-model", ["bench", "{BAD}/corrupt.onnx"], "cannot be parsed"),
    ("not-onnx", ["bench", "{DEV}"], "cannot be parsed"),
    ("batch-0", ["bench", "{DYN}", "--batch-size", "0"], "0 is below 1"),
    ("batch-neg", ["bench", "{DYN}", "--batch-size", "-1"], "-1 is below 1"),
    ("iterations-0", ["bench", "{DYN}", "--iterations", "0"], "0 is below 1"),
    ("warmup-neg", ["bench", "{DYN}", "--warmup", "-1"], "-1 is below 0"),
    ("streams-0", ["bench", "{DYN}", "--streams", "0"], "0 is below 1"),
    ("threads-0", ["bench", "{DYN}", "--threads", "0"], "0 is below 1"),
    ("seq-1", ["bench", "{DYN}", "--seq-len", "1"], "1 is below 2"),
    ("scenario", ["bench", "{DYN}", "--scenario", "warp"], "'warp' is not one of"),
    ("engine", ["bench", "{DYN}", "--engine", "tensorrt"], "'tensorrt' is not one of"),
    ("static-batch", ["bench", "{STATIC}", "--batch-size", "4"], "static shape [2, 16]"),
    ("seq-too-long", ["bench", "{DYN}", "--seq-len", "100"], "exceeds the 64 positions"),
    ("streams-latency", ["bench", "{DYN}", "--streams", "2"], "--scenario throughput"),
    ("json-exists", ["bench", "{DYN}", "--json", "{EXISTING}"], "already exists"),
    ("json-is-model", ["bench", "{DYN}", "--json", "{DYN}"], "is also an input"),
    ("plot-jpg", ["bench", "{DYN}", "--plot", "{OUT}/p.jpg"], "does not end in .png"),
    ("markdown-dir", ["bench", "{DYN}", "--markdown", "{OUT}"], "is a directory"),
    ("same-outputs", ["bench", "{DYN}", "--json", "{OUT}/r", "--markdown", "{OUT}/r"], "extension"),
    (
        "same-files",
        ["bench", "{DYN}", "--json", "{OUT}/r.txt", "--markdown", "{OUT}/r.txt"],
        "same file",
    ),
    ("json-read-only", ["bench", "{DYN}", "--json", "/proc/obert/r.json"], "cannot write in"),
]
if importlib.util.find_spec("deepsparse") is None:
    BENCH.append(("deepsparse", ["bench", "{STATIC}", "--engine", "deepsparse"], "not installed"))

SIZE = [
    ("missing-model", ["size", "{BAD}/no.onnx"], "does not exist"),
    ("model-is-dir", ["size", "{BAD}"], "is a directory"),
    ("corrupt-model", ["size", "{BAD}/corrupt.onnx"], "cannot be parsed"),
    ("reference-missing", ["size", "{DYN}", "--reference", "{BAD}/no.onnx"], "does not exist"),
    ("reference-dir", ["size", "{DYN}", "--reference", "{BAD}"], "is a directory"),
    ("reference-corrupt", ["size", "{DYN}", "--reference", "{BAD}/corrupt.onnx"], "parsed"),
    ("json-exists", ["size", "{DYN}", "--json", "{EXISTING}"], "already exists"),
    ("json-is-model", ["size", "{DYN}", "--json", "{DYN}"], "is also an input"),
    ("json-dir", ["size", "{DYN}", "--json", "{OUT}"], "is a directory"),
    ("json-dot", ["size", "{DYN}", "--json", "."], "is a directory"),
    ("no-models", ["size"], "Missing argument 'models'"),
]

_LT = ["latency-table", "{OUT}/t.json", "--rounds", "1", "--iterations", "1"]
LATENCY_TABLE = [
    ("bad-shape", [*_LT, "--shapes", "64x"], "shape '64x' is not two positive integers"),
    ("no-shape", [*_LT, "--shapes", ","], "no weight shape"),
    ("block-does-not-divide", [*_LT, "--shapes", "64x65"], "does not divide the weight shape"),
    ("bad-block", [*_LT, "--shapes", "64x64", "--block", "16"], "block '16' is not two"),
    ("density-above-1", [*_LT, "--shapes", "64x64", "--densities", "1.5"], "not in (0, 1]"),
    ("density-text", [*_LT, "--shapes", "64x64", "--densities", "a"], "--densities 'a'"),
    ("no-tokens", [*_LT, "--shapes", "64x64", "--tokens", "0"], "'--tokens': 0 is below 1"),
    ("unknown-form", [*_LT, "--shapes", "64x64", "--form", "bsr"], "'bsr' is not one of"),
    ("missing-shapes", _LT, "Missing option '--shapes'"),
    ("exists", ["latency-table", "{EXISTING}", "--shapes", "64x64"], "already exists"),
    ("is-dir", ["latency-table", ".", "--shapes", "64x64"], "is a directory"),
    ("not-json", ["latency-table", "{OUT}/t.txt", "--shapes", "64x64"], "does not end in .json"),
]

GLOBAL = [
    ("unknown-command", ["exprot", "x"], "No such command 'exprot'"),
    ("unknown-option", ["bench", "{DYN}", "--iters", "3"], "No such option: --iters"),
]

TABLES = {
    "export": EXPORT,
    "quantize": QUANTIZE,
    "qat": QAT,
    "evaluate": EVALUATE,
    "bench": BENCH,
    "size": SIZE,
    "latency-table": LATENCY_TABLE,
    "global": GLOBAL,
}
CASES = [
    pytest.param(args, message, id=f"{command}-{name}")
    for command, table in TABLES.items()
    for name, args, message in table
]


@pytest.fixture(scope="session")
def bad_files(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_checkpoint: Path,
    dynamic_onnx: Path,
    squad_file: Path,
) -> dict[str, Path]:
    """Broken checkpoints, models and data files (built once)."""
    from safetensors.numpy import load_file, save_file

    bad = tmp_path_factory.mktemp("bad")
    (bad / "empty_dir").mkdir()
    corrupt = bad / "corrupt_ckpt"
    corrupt.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", corrupt / "config.json")
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file at all")
    broken = bad / "bad_config_ckpt"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "config.json").write_text("{ this is not json", encoding="utf-8")
    config_only = bad / "config_only"
    config_only.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", config_only / "config.json")
    nan_ckpt = bad / "nan_ckpt"
    shutil.copytree(tiny_checkpoint, nan_ckpt)
    weights = load_file(str(nan_ckpt / "model.safetensors"))
    name = next(n for n in weights if n.endswith("query.weight"))
    weights[name] = weights[name].copy()
    weights[name][0, 0] = np.nan
    save_file(weights, str(nan_ckpt / "model.safetensors"), metadata={"format": "pt"})
    proto = onnx.load(str(dynamic_onnx))
    for init in proto.graph.initializer:
        if len(init.dims) == 2 and init.data_type == onnx.TensorProto.FLOAT:
            array = numpy_helper.to_array(init).copy()
            array[0, 0] = np.inf
            init.CopyFrom(numpy_helper.from_array(array, init.name))
            break
    onnx.save(proto, str(bad / "nan.onnx"))
    (bad / "corrupt.onnx").write_bytes(b"\x08\x07garbage" * 50)
    (bad / "empty.onnx").write_bytes(b"")
    (bad / "binary.tsv").write_bytes(bytes(range(128, 256)) * 4)
    (bad / "cols.tsv").write_text("foo\tbar\nx\ty\n", encoding="utf-8")
    (bad / "header.tsv").write_text("sentence\tlabel\n", encoding="utf-8")
    (bad / "nolabel.tsv").write_text("sentence\nw1 good\nw2 bad\n", encoding="utf-8")
    rows = "".join(f"w{i} good\t1\n" for i in range(8))
    (bad / "textlabel.tsv").write_text(f"sentence\tlabel\nw9\tpositive\n{rows}", encoding="utf-8")
    (bad / "short.tsv").write_text(f"sentence\tlabel\njust text\n{rows}", encoding="utf-8")
    (bad / "label5.tsv").write_text("sentence\tlabel\nw1 good\t1\nw2 bad\t5\n", encoding="utf-8")
    (bad / "sq.json").write_text(json.dumps({"data": [{"title": "t"}]}), encoding="utf-8")
    _broken_exports(bad, dynamic_onnx)
    big_tok = bad / "big_tok"  # a tokenizer-only folder whose ids exceed the model's vocabulary
    big_tok.mkdir()
    vocab = [line for line in (tiny_checkpoint / "vocab.txt").read_text().splitlines() if line]
    (big_tok / "vocab.txt").write_text(
        "\n".join(vocab[:5] + [f"junk{i}" for i in range(200)] + vocab[5:]) + "\n"
    )
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_checkpoint / name).is_file():
            shutil.copy(tiny_checkpoint / name, big_tok / name)
    return {"BAD": bad, "NAN_CKPT": nan_ckpt, "NAN_ONNX": bad / "nan.onnx", "SQUAD": squad_file}


def _broken_exports(bad: Path, dynamic_onnx: Path) -> None:
    """Copies of a valid export that do not fit the tiny classifier (outputs, classes, inputs)."""
    proto = onnx.load(str(dynamic_onnx))
    renamed = onnx.ModelProto()
    renamed.CopyFrom(proto)
    for node in renamed.graph.node:
        node.output[:] = ["start_logits" if o == "logits" else o for o in node.output]
    renamed.graph.output[0].name = "start_logits"
    onnx.save(renamed, str(bad / "qa_outputs.onnx"))
    three = onnx.ModelProto()
    three.CopyFrom(proto)
    three.graph.output[0].type.tensor_type.shape.dim[-1].dim_value = 3
    onnx.save(three, str(bad / "three.onnx"))
    extra = onnx.ModelProto()
    extra.CopyFrom(proto)
    extra.graph.input.append(
        onnx.helper.make_tensor_value_info(
            "pixel_mask", onnx.TensorProto.INT64, ["batch", "sequence"]
        )
    )
    onnx.save(extra, str(bad / "extra_input.onnx"))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(("args", "message"), CASES)
def test_bad_input_fails_with_one_clear_line_and_writes_nothing(
    args: list[str],
    message: str,
    tmp_path: Path,
    bad_files: dict[str, Path],
    tiny_checkpoint: Path,
    tiny_qa_checkpoint: Path,
    static_onnx: Path,
    dynamic_onnx: Path,
    static_int8_onnx: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "ckpts").mkdir()  # "ckpts/run-1" looks like a Hub id, but ckpts is a local folder
    existing = out / "existing.json"
    existing.write_text("{}\n", encoding="utf-8")
    existing_onnx = out / "existing.onnx"
    existing_onnx.write_bytes(b"an earlier export")
    places = {
        **{k: str(v) for k, v in bad_files.items()},
        "CKPT": str(tiny_checkpoint),
        "QA": str(tiny_qa_checkpoint),
        "STATIC": str(static_onnx),
        "DYN": str(dynamic_onnx),
        "INT8": str(static_int8_onnx),
        "TRAIN": str(data_dir / "train.tsv"),
        "DEV": str(data_dir / "dev.tsv"),
        "OUT": str(out),
        "EXISTING": str(existing),
        "EXISTING_ONNX": str(existing_onnx),
    }
    argv = [a.format(**places) for a in args]
    if any(a.startswith("/proc/") for a in argv) and not Path("/proc").is_dir():
        pytest.skip("needs /proc (a directory nobody can create files in)")
    monkeypatch.chdir(out)  # "." is the output directory
    inputs_before = _snapshot(bad_files["BAD"])
    before = _snapshot(out)
    result = runner.invoke(app, argv)
    text = result.output
    assert result.exit_code == 2, text
    assert "Traceback" not in text, text
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in text.splitlines() if line.strip() and "it/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert message in lines[0], lines[0]
    assert _snapshot(out) == before  # nothing created, nothing replaced
    assert _snapshot(bad_files["BAD"]) == inputs_before


def test_every_command_has_a_table() -> None:
    commands = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    assert commands == set(TABLES) - {"global"}, commands
    assert all(len(table) >= 8 for name, table in TABLES.items() if name != "global")


def test_overwrite_replaces_an_existing_output(tmp_path: Path, dynamic_onnx: Path) -> None:
    target = tmp_path / "size.json"
    target.write_text("old\n", encoding="utf-8")
    result = runner.invoke(app, ["size", str(dynamic_onnx), "--json", str(target), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())[0]["file_bytes"] == dynamic_onnx.stat().st_size


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_read_only_output_directory(tmp_path: Path, dynamic_onnx: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = runner.invoke(app, ["size", str(dynamic_onnx), "--json", str(locked / "s.json")])
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 2 and "cannot write in" in result.output
    assert list(locked.iterdir()) == []


def test_bench_checks_every_model_before_timing_any(
    dynamic_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import obert_deploy.bench._bench as bench_module

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was timed before every model was checked")

    monkeypatch.setattr(bench_module, "benchmark", never)
    result = runner.invoke(
        app, ["bench", str(dynamic_onnx), str(tmp_path / "missing.onnx"), "--seq-len", "16"]
    )
    assert result.exit_code == 2 and "missing.onnx' does not exist" in result.output


def test_export_with_nan_weights_names_the_tensor_before_exporting(
    bad_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a NaN model was exported and then blamed on --opset/--atol."""
    import obert_deploy.export._export as export_module

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the exporter ran on a NaN model")

    monkeypatch.setattr(export_module, "_export_graph", never)
    result = runner.invoke(
        app, ["export", str(bad_files["NAN_CKPT"]), "-o", str(tmp_path / "m.onnx")]
    )
    assert result.exit_code == 2
    assert "query.weight (1 NaN of 1024)" in result.output
    assert "--opset" not in result.output and "differs from PyTorch" not in result.output


def test_non_finite_onnx_output_is_not_a_tolerance_problem(
    tiny_model: object, dynamic_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: NaN outputs said "differs by up to nan ... raise the tolerance"."""
    import onnxruntime as ort

    from obert_deploy import ExportConfig, VerificationError
    from obert_deploy.export._export import (
        _check_parity,
        _OutputsAsTuple,
        model_input_names,
        sample_inputs,
    )

    original = ort.InferenceSession.run

    def nan_run(self: object, names: object, feeds: object) -> list[np.ndarray]:
        return [np.full_like(o, np.nan) for o in original(self, names, feeds)]  # type: ignore[arg-type]

    monkeypatch.setattr(ort.InferenceSession, "run", nan_run)
    names = model_input_names(tiny_model)  # type: ignore[arg-type]
    wrapper = _OutputsAsTuple.wrap(tiny_model, names, ("logits",))  # type: ignore[arg-type]
    feeds = [sample_inputs(tiny_model, 2, SEQ_LEN)]  # type: ignore[arg-type]
    with pytest.raises(
        VerificationError, match=r"ONNX Runtime output logits \(4 NaN of 4\)"
    ) as info:
        _check_parity(dynamic_onnx, wrapper, feeds, ["logits"], ExportConfig(seq_len=SEQ_LEN))
    assert "--atol" not in str(info.value) and "re-export with another --opset" in str(info.value)


def test_bench_seq_len_above_positions_is_checked_before_the_engine(
    dynamic_onnx: Path, tmp_path: Path
) -> None:
    """Regression: an ORT broadcast traceback for --seq-len above max_position_embeddings."""
    from obert_deploy import BenchConfig, ShapeMismatchError, benchmark

    with pytest.raises(ShapeMismatchError, match=r"exceeds the 64 positions.*--max-seq-length 64"):
        benchmark(dynamic_onnx, BenchConfig(seq_len=65, iterations=1, warmup=0))
    assert benchmark(dynamic_onnx, BenchConfig(seq_len=64, iterations=1, warmup=0)).seq_len == 64


def test_engine_run_failure_is_one_clear_error(
    dynamic_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from obert_deploy import BenchConfig, OnnxModelError, benchmark
    from obert_deploy.bench import _engines

    def broken(self: object, feeds: object) -> list[np.ndarray]:
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : broadcast\nline 2")

    monkeypatch.setattr(_engines._OrtRunner, "run", broken)
    with pytest.raises(
        OnnxModelError, match=r"cannot run .* on inputs of shapes \[\[1, 16\]"
    ) as info:
        benchmark(dynamic_onnx, BenchConfig(seq_len=16, iterations=1, warmup=0))
    assert "\n" not in str(info.value)


def test_evaluate_data_file_of_another_task_names_the_file_briefly(
    tiny_checkpoint: Path, dynamic_onnx: Path, tmp_path: Path
) -> None:
    """Regression: a JSON file given as TSV printed the whole file as "the header"."""
    big = tmp_path / "dev-v1.1.json"
    big.write_text(json.dumps({"data": [{"x": "y" * 100_000}]}), encoding="utf-8")
    args = ["evaluate", str(tiny_checkpoint), str(dynamic_onnx), "--data", str(big)]
    result = runner.invoke(app, [*args, "--seq-len", "16"])
    assert result.exit_code == 2 and "looks like JSON" in result.output
    assert len(result.output) < 500


# --- the Python API: the same clear ObertDeployError, one line ---------------------------------


def _api_cases() -> list[tuple[str, Any, str]]:
    import obert_deploy as od
    from obert_deploy.evaluation._tokenize import iter_batches

    return [
        ("export-task", lambda f: od.ExportConfig(task="ner"), "'ner'"),
        ("export-engine", lambda f: od.ExportConfig(engine="trt"), "'trt'"),
        ("export-opset", lambda f: od.ExportConfig(opset=13), "opset 13"),
        ("export-atol-nan", lambda f: od.ExportConfig(atol=float("nan")), "atol=nan"),
        ("export-seq-1", lambda f: od.ExportConfig(seq_len=1), "seq_len (1)"),
        ("export-batch-dyn", lambda f: od.ExportConfig(batch_size=2000), "--batch-size 2000"),
        ("bench-iterations", lambda f: od.BenchConfig(iterations=0), "got 0"),
        ("bench-scenario", lambda f: od.BenchConfig(scenario="burst"), "'burst'"),
        ("bench-warmup", lambda f: od.BenchConfig(warmup=-1), "got -1"),
        ("qat-lr-nan", lambda f: od.QATConfig(learning_rate=float("nan")), "(nan)"),
        ("qat-task", lambda f: od.QATConfig(task="question-answering"), "QAT fine-tuning"),
        ("qat-atol", lambda f: od.QATConfig(atol=0.0), "atol must be finite and > 0"),
        ("dynamic-bits", lambda f: od.DynamicInt8Config(embedding_bits=2), "embedding_bits 2"),
        ("dynamic-block", lambda f: od.DynamicInt8Config(embedding_block_size=20), "size 20"),
        ("static-method", lambda f: od.StaticInt8Config(calibration_method="kl"), "'kl'"),
        ("static-engine", lambda f: od.StaticInt8Config.for_engine("trt"), "'trt'"),
        ("task", lambda f: od.get_task("ner"), "'ner'"),
        ("tsv-missing", lambda f: od.read_glue_tsv(f["BAD"] / "no.tsv"), "does not exist"),
        ("tsv-dir", lambda f: od.read_glue_tsv(f["BAD"]), "is a directory"),
        ("tsv-json", lambda f: od.read_glue_tsv(f["SQUAD"]), "looks like JSON"),
        ("squad-tsv", lambda f: od.read_squad(f["BAD"] / "cols.tsv"), "is not JSON"),
        ("squad-shape", lambda f: od.read_squad(f["BAD"] / "sq.json"), "article 0"),
        ("results-missing", lambda f: od.read_results_json(f["BAD"] / "r.json"), "does not exist"),
        ("results-not-json", lambda f: od.read_results_json(f["BAD"] / "cols.tsv"), "not JSON"),
        ("results-shape", lambda f: od.read_results_json(f["BAD"] / "sq.json"), "JSON list"),
        ("onnx-dir", lambda f: od.load_onnx(f["BAD"]), "is a directory"),
        ("onnx-corrupt", lambda f: od.load_onnx(f["BAD"] / "corrupt.onnx"), "cannot be parsed"),
        ("size-ref-dir", lambda f: od.size_report(f["NAN_ONNX"], reference=f["BAD"]), "directory"),
        ("plot-empty", lambda f: od.plot_results([], f["BAD"] / "p.png"), "no benchmark results"),
        (
            "runner-engine",
            lambda f: od.create_runner("trt", f["NAN_ONNX"], batch_size=1, seq_len=8, threads=1),
            "'trt'",
        ),
        ("quantize-in-place", lambda f: od.quantize_onnx(f["NAN_ONNX"], f["NAN_ONNX"]), "NaN/inf"),
        (
            "evaluate-task",
            lambda f: od.evaluate(f["BAD"], [], task="masked-lm"),
            "evaluate supports",
        ),
        (
            "batches-0",
            lambda f: next(iter_batches({"x": np.ones((2, 2))}, 0)),
            "batch size 0",
        ),
    ]


@pytest.mark.parametrize(
    ("call", "message"), [c[1:] for c in _api_cases()], ids=[c[0] for c in _api_cases()]
)
def test_python_api_bad_input_is_one_clear_error(
    call: Any, message: str, bad_files: dict[str, Path]
) -> None:
    from obert_deploy import ObertDeployError

    before = _snapshot(bad_files["BAD"])
    with pytest.raises(ObertDeployError) as info:
        call(bad_files)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text
    assert _snapshot(bad_files["BAD"]) == before


def test_quantize_refuses_to_overwrite_its_source(dynamic_onnx: Path, tmp_path: Path) -> None:
    from obert_deploy import ObertDeployError, quantize_onnx

    copy = tmp_path / "m.onnx"
    shutil.copy(dynamic_onnx, copy)
    with pytest.raises(ObertDeployError, match="is the source model"):
        quantize_onnx(copy, copy)
    assert copy.read_bytes() == dynamic_onnx.read_bytes()


def test_an_unexpected_error_is_one_line_and_the_traceback_needs_verbose(
    dynamic_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import obert_deploy.size._size as size_module

    def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something nobody anticipated\nsecond line")

    monkeypatch.setattr(size_module, "size_report", bug)
    result = runner.invoke(app, ["size", str(dynamic_onnx)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: unexpected RuntimeError: something nobody anticipated second line; this is a "
        "bug in obert-deploy: rerun with --verbose for the traceback and report it"
    ]
    verbose = runner.invoke(app, ["--verbose", "size", str(dynamic_onnx)])
    assert isinstance(verbose.exception, RuntimeError)


def test_ctrl_c_exits_130_with_one_interrupted_line(
    dynamic_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: Ctrl-C printed "error: aborted" and exited 1 (obert-train's CLI exits 130)."""
    import obert_deploy.size._size as size_module

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(size_module, "size_report", ctrl_c)
    result = runner.invoke(app, ["size", str(dynamic_onnx)])
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines() == ["interrupted; run the command again to finish"]
