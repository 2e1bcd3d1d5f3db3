"""Bad input gives a clear error naming the value and the remedy, and writes nothing."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from obert_deploy import (
    BenchConfig,
    CheckpointError,
    EngineNotInstalledError,
    ExportConfig,
    ObertDeployError,
    OnnxModelError,
    ShapeMismatchError,
    UnsupportedTaskError,
    VerificationError,
    benchmark,
    check_input_shapes,
    create_runner,
    export_onnx,
    get_task,
    load_checkpoint,
    load_onnx,
    onnx_inputs,
)


def test_unknown_task_lists_known_tasks() -> None:
    with pytest.raises(UnsupportedTaskError, match=r"'token-magic'.*sequence-classification"):
        get_task("token-magic")
    with pytest.raises(UnsupportedTaskError, match="token-magic"):
        ExportConfig(task="token-magic")


def test_all_errors_are_value_errors() -> None:
    for cls in (CheckpointError, OnnxModelError, ShapeMismatchError, VerificationError):
        assert issubclass(cls, ObertDeployError)
    assert issubclass(ObertDeployError, ValueError)


def test_one_root_and_missing_dependencies_are_import_errors() -> None:
    from obert_deploy import MissingDependencyError

    for cls in (
        CheckpointError,
        EngineNotInstalledError,
        MissingDependencyError,
        OnnxModelError,
        ShapeMismatchError,
        UnsupportedTaskError,
        VerificationError,
    ):
        assert issubclass(cls, ObertDeployError), cls
    for cls in (MissingDependencyError, EngineNotInstalledError):
        assert issubclass(cls, ImportError), cls
    with pytest.raises(ImportError, match="needs 'x'"):
        raise MissingDependencyError("export needs 'x'")


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"does not exist.*save_pretrained"):
        load_checkpoint(tmp_path / "nope", "sequence-classification")


def test_checkpoint_without_config(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_checkpoint(tmp_path, "sequence-classification")


def test_checkpoint_without_weights(tmp_path: Path, tiny_checkpoint: Path) -> None:
    shutil.copy(tiny_checkpoint / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="has no weights"):
        load_checkpoint(tmp_path, "sequence-classification")


def test_corrupt_checkpoint_weights(tmp_path: Path, tiny_checkpoint: Path) -> None:
    shutil.copy(tiny_checkpoint / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"definitely not safetensors")
    with pytest.raises(CheckpointError, match=r"could not load checkpoint .*save_pretrained"):
        load_checkpoint(tmp_path, "sequence-classification")


def test_checkpoint_file_instead_of_directory(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="is a file, not a directory"):
        load_checkpoint(tiny_checkpoint / "config.json", "sequence-classification")


def test_failed_export_leaves_no_file(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from obert_deploy.export import _export

    def lose_everything(weights: object, model: object) -> list[object]:
        rows = _real_match(weights, model)
        return [type(r)(r.name, r.shape, r.torch_sparsity, None, None, False) for r in rows]

    _real_match = _export.match_sparsity
    monkeypatch.setattr(_export, "match_sparsity", lose_everything)
    target = tmp_path / "model.onnx"
    with pytest.raises(VerificationError, match="sparsity did not survive"):
        export_onnx(tiny_checkpoint, target, ExportConfig(engine="deepsparse", seq_len=8))
    assert list(tmp_path.iterdir()) == []


def test_missing_and_corrupt_onnx(tmp_path: Path) -> None:
    with pytest.raises(OnnxModelError, match=r"does not exist.*obert-deploy export"):
        load_onnx(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(OnnxModelError, match="corrupt"):
        load_onnx(corrupt)
    with pytest.raises(OnnxModelError):
        benchmark(corrupt, BenchConfig(iterations=1, warmup=0))


def test_shape_mismatch_names_input_and_remedy(static_onnx: Path) -> None:
    inputs = onnx_inputs(load_onnx(static_onnx))
    with pytest.raises(
        ShapeMismatchError, match=r"'input_ids'.*\[2, 16\].*batch size 16.*--batch-size 2"
    ):
        check_input_shapes(inputs, 16, 16)
    with pytest.raises(ShapeMismatchError, match=r"sequence length 128"):
        check_input_shapes(inputs, 2, 128)
    with pytest.raises(ShapeMismatchError, match="static shape"):
        benchmark(static_onnx, BenchConfig(batch_size=1, seq_len=16, iterations=1))


def test_bench_config_validation() -> None:
    with pytest.raises(ObertDeployError, match="'warp-speed'"):
        BenchConfig(scenario="warp-speed")
    with pytest.raises(ObertDeployError, match="'tensorrt'"):
        BenchConfig(engine="tensorrt")
    with pytest.raises(ObertDeployError, match="iterations must be >= 1, got 0"):
        BenchConfig(iterations=0)


@pytest.mark.skipif(
    importlib.util.find_spec("deepsparse") is not None, reason="deepsparse is installed here"
)
def test_deepsparse_missing_says_how_to_install(static_onnx: Path) -> None:
    with pytest.raises(EngineNotInstalledError) as info:
        create_runner("deepsparse", static_onnx, batch_size=2, seq_len=16, threads=1)
    message = str(info.value)
    assert "deepsparse==1.8.0" in message
    assert "python3.11 -m venv .venv-deepsparse" in message
    assert "numpy<2" in message
    assert "--engine deepsparse" in message
