"""Files exported in this (main) environment run on DeepSparse 1.8 in its own environment.

DeepSparse needs Python 3.11, onnx<1.15 and numpy<2, so these tests export here and run the
engine through a subprocess in the DeepSparse interpreter (``.venv-deepsparse`` in the repo root,
``$OBERT_DEEPSPARSE_PYTHON``, or this interpreter if it has deepsparse). They skip cleanly when
there is none. Run them with ``packages/obert-deploy/scripts/test_deepsparse.sh``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.deepsparse

_PARITY = """
import json, sys
import numpy as np
from obert_deploy import create_runner, load_onnx, make_inputs, onnx_inputs
path, batch, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
feeds = make_inputs(onnx_inputs(load_onnx(path)), batch, seq, vocab_size=80, seed=11)
ds = create_runner("deepsparse", path, batch_size=batch, seq_len=seq, threads=1).run(feeds)[0]
ort = create_runner("onnxruntime", path, batch_size=batch, seq_len=seq, threads=1).run(feeds)[0]
import deepsparse, onnx
print(json.dumps({"diff": float(np.max(np.abs(ds - ort))), "onnx": onnx.__version__,
                  "numpy": np.__version__, "deepsparse": deepsparse.__version__}))
"""


def _bench(cli, tmp_path: Path, model: Path) -> dict:  # type: ignore[no-untyped-def]
    out = tmp_path / f"{model.stem}.json"
    result = cli(
        "bench",
        str(model),
        "--engine",
        "deepsparse",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--iterations",
        "5",
        "--warmup",
        "2",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (entry,) = json.loads(out.read_text())
    return entry


def test_fp32_static_export_runs_and_matches_ort(
    deepsparse_python: str, deepsparse_cli, tmp_path: Path, static_onnx: Path
) -> None:
    entry = _bench(deepsparse_cli, tmp_path, static_onnx)
    assert entry["engine"] == "deepsparse" and entry["engine_version"] == "1.8.0"
    assert entry["static_shapes"] is True and entry["latency_ms"]["p50"] > 0
    probe = subprocess.run(
        [deepsparse_python, "-c", _PARITY, str(static_onnx), "2", "16"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    assert info["onnx"].startswith("1.14") and info["numpy"].startswith("1.")
    assert info["diff"] < 1e-3


def test_static_int8_runs(deepsparse_cli, tmp_path: Path, static_int8_onnx: Path) -> None:
    entry = _bench(deepsparse_cli, tmp_path, static_int8_onnx)
    assert entry["weight_sparsity"] > 0.5
    assert float(entry["meta"]["fraction_of_supported_ops"]) > 0


def test_qoperator_int8_runs(deepsparse_cli, tmp_path: Path, static_onnx: Path) -> None:
    import numpy as np

    from obert_deploy import StaticInt8Config, load_onnx, make_inputs, onnx_inputs, quantize_onnx

    inputs = onnx_inputs(load_onnx(static_onnx))
    batches = [make_inputs(inputs, 2, 16, vocab_size=80, seed=s) for s in range(4)]
    model = tmp_path / "qop.onnx"
    quantize_onnx(
        static_onnx, model, StaticInt8Config.for_engine("deepsparse"), calibration=batches
    )
    entry = _bench(deepsparse_cli, tmp_path, model)
    assert entry["latency_ms"]["p50"] > 0 and np.isfinite(entry["items_per_s"])


def test_throughput_scenario(deepsparse_cli, tmp_path: Path, static_onnx: Path) -> None:
    out = tmp_path / "thr.json"
    result = deepsparse_cli(
        "bench",
        str(static_onnx),
        "--engine",
        "deepsparse",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--scenario",
        "throughput",
        "--threads",
        "2",
        "--streams",
        "2",
        "--iterations",
        "8",
        "--warmup",
        "1",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (entry,) = json.loads(out.read_text())
    assert entry["scenario"] == "throughput" and entry["streams"] == 2
    assert entry["meta"]["num_streams"] == "2" and entry["items_per_s"] > 0


def test_qat_model_runs(
    deepsparse_cli, tmp_path: Path, tiny_model, tiny_checkpoint: Path, data_dir: Path
) -> None:
    pytest.importorskip("torchao")
    from obert_deploy import QATConfig, load_tokenizer, qat_export, read_glue_tsv, tokenize

    dataset = read_glue_tsv(data_dir / "train.tsv", max_samples=16)
    feeds = tokenize(
        load_tokenizer(tiny_checkpoint),
        dataset.texts,
        16,
        ["input_ids", "attention_mask", "token_type_ids"],
    )
    import numpy as np

    batches = [
        ({k: v[i : i + 8] for k, v in feeds.items()}, np.asarray(dataset.labels[i : i + 8]))
        for i in (0, 8)
    ]
    model = tmp_path / "qat.onnx"
    qat_export(
        tiny_model,
        model,
        batches,
        QATConfig(engine="deepsparse", steps=2, seq_len=16, export_batch_size=2),
    )
    entry = _bench(deepsparse_cli, tmp_path, model)
    assert entry["latency_ms"]["p50"] > 0


def test_size_reads_main_env_files(
    deepsparse_cli, static_onnx: Path, static_int8_onnx: Path
) -> None:
    result = deepsparse_cli("size", str(static_onnx), str(static_int8_onnx))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tiny_static_int8.onnx" in result.stdout


def test_unusable_files_are_refused_clearly(
    deepsparse_cli, tmp_path: Path, dynamic_onnx: Path
) -> None:
    result = deepsparse_cli(
        "bench", str(dynamic_onnx), "--engine", "deepsparse", "--batch-size", "2", "--seq-len", "16"
    )
    assert result.returncode == 2
    assert "IR version 10" in result.stderr and "--engine deepsparse" in result.stderr

    from obert_deploy import DynamicInt8Config, quantize_onnx

    dynamic_int8 = tmp_path / "dyn_int8.onnx"
    import onnx

    from obert_deploy import convert_for_deepsparse, load_onnx

    lowered = tmp_path / "lowered.onnx"
    onnx.save(convert_for_deepsparse(load_onnx(dynamic_onnx)), str(lowered))
    quantize_onnx(lowered, dynamic_int8, DynamicInt8Config())
    result = deepsparse_cli(
        "bench", str(dynamic_int8), "--engine", "deepsparse", "--batch-size", "2", "--seq-len", "16"
    )
    assert result.returncode == 2
    assert "dynamically quantized" in result.stderr and "--method static" in result.stderr
