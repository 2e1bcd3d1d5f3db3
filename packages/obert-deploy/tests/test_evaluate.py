"""evaluate: ONNX accuracy next to PyTorch on the same tokenised dev set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from obert_deploy import (
    EngineNotInstalledError,
    ExportConfig,
    ObertDeployError,
    OnnxModelError,
    ShapeMismatchError,
    UnsupportedTaskError,
    evaluate,
    export_onnx,
    read_squad,
    squad_scores,
)


def test_classification_parity(
    tiny_checkpoint: Path,
    data_dir: Path,
    static_onnx: Path,
    dynamic_onnx: Path,
    static_int8_onnx: Path,
) -> None:
    report = evaluate(
        tiny_checkpoint,
        [static_onnx, dynamic_onnx, static_int8_onnx],
        data=data_dir / "dev.tsv",
        seq_len=16,
        batch_size=8,
    )
    torch_result, static, dynamic, int8 = report.results
    assert report.num_examples == 40
    assert torch_result.engine == "pytorch" and torch_result.agreement is None
    # Metrics are fractions in [0, 1] (printed as percent): the fixture model was trained a little.
    assert 0.6 < torch_result.metrics["accuracy"] <= 1.0
    for fp32 in (static, dynamic):  # 40 rows, static batch 2 / dynamic batch 8: same predictions
        assert fp32.agreement == 1.0
        assert fp32.metrics["accuracy"] == torch_result.metrics["accuracy"]
        assert fp32.max_abs_diff is not None and fp32.max_abs_diff < 1e-4
    assert int8.agreement is not None and int8.agreement >= 0.9
    table = report.to_markdown()
    assert "tiny_static_int8.onnx" in table and "accuracy" in table
    assert f"{100 * torch_result.metrics['accuracy']:.2f} %" in table


def test_odd_number_of_examples_with_static_batch(
    tiny_checkpoint: Path, data_dir: Path, static_onnx: Path
) -> None:
    report = evaluate(
        tiny_checkpoint, [static_onnx], data=data_dir / "dev.tsv", seq_len=16, max_samples=7
    )
    assert report.num_examples == 7 and report.results[1].agreement == 1.0


def test_bad_model_fails_before_the_pytorch_pass(
    tiny_checkpoint: Path, data_dir: Path, static_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import obert_deploy.evaluation._evaluate as evaluate_module

    def no_torch_pass(*args: object, **kwargs: object) -> None:
        raise AssertionError("the PyTorch pass ran before the ONNX models were checked")

    monkeypatch.setattr(evaluate_module, "_torch_predict", no_torch_pass)
    with pytest.raises(ShapeMismatchError, match=r"sequence length 32.*--max-seq-length 16"):
        evaluate(tiny_checkpoint, [static_onnx], data=data_dir / "dev.tsv", seq_len=32)
    with pytest.raises(OnnxModelError, match="does not exist"):
        evaluate(tiny_checkpoint, [data_dir / "missing.onnx"], data=data_dir / "dev.tsv")
    with pytest.raises(ObertDeployError, match=r"batch_size \(0\) must be >= 1"):
        evaluate(tiny_checkpoint, [static_onnx], data=data_dir / "dev.tsv", batch_size=0)


@pytest.mark.skipif(
    importlib.util.find_spec("deepsparse") is not None, reason="deepsparse installed"
)
def test_deepsparse_evaluate_explains_the_environment(
    tiny_checkpoint: Path, data_dir: Path, static_onnx: Path
) -> None:
    with pytest.raises(EngineNotInstalledError, match=r"one Python environment.*onnxruntime"):
        evaluate(tiny_checkpoint, [static_onnx], data=data_dir / "dev.tsv", engine="deepsparse")


def test_padding_for_deepsparse_dynamic_models(
    dynamic_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import obert_deploy.evaluation._evaluate as evaluate_module

    class FakeRunner:
        def run(self, feeds: dict[str, object]) -> list[object]:
            return []

    monkeypatch.setattr(evaluate_module, "create_runner", lambda *a, **k: FakeRunner())
    _, batch, pad = evaluate_module._onnx_predictor(str(dynamic_onnx), "deepsparse", 16, 8, 1)
    assert (batch, pad) == (8, True)
    _, batch, pad = evaluate_module._onnx_predictor(str(dynamic_onnx), "onnxruntime", 16, 8, 1)
    assert (batch, pad) == (8, False)


def test_squad(tmp_path: Path, tiny_qa_checkpoint: Path, squad_file: Path) -> None:
    onnx_path = tmp_path / "qa.onnx"
    export_onnx(tiny_qa_checkpoint, onnx_path, ExportConfig(task="question-answering", seq_len=16))
    report = evaluate(
        tiny_qa_checkpoint, [onnx_path], task="question-answering", data=squad_file, seq_len=16
    )
    assert report.num_examples == 2
    torch_result, onnx_result = report.results
    assert set(torch_result.metrics) == {"exact_match", "f1"}
    assert all(0.0 <= v <= 1.0 for v in torch_result.metrics.values())  # fractions
    assert onnx_result.metrics == torch_result.metrics
    assert onnx_result.agreement == 1.0
    assert len(read_squad(squad_file)) == 2


def test_squad_scores() -> None:
    assert squad_scores("The Eiffel Tower!", ["eiffel tower"]) == (1.0, 1.0)
    em, f1 = squad_scores("big red tower", ["red tower", "nope"])
    assert em == 0.0 and f1 == pytest.approx(0.8)
    assert squad_scores("", ["x"]) == (0.0, 0.0)


def test_unsupported_task(tiny_checkpoint: Path) -> None:
    with pytest.raises(UnsupportedTaskError, match="evaluate supports"):
        evaluate(tiny_checkpoint, [], task="masked-lm")


def test_default_dataset_is_sst2(
    tiny_checkpoint: Path,
    dynamic_onnx: Path,
    shared_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from obert_deploy.evaluation import data_dir

    root = data_dir(shared_data_dir)
    if not (root / "SST-2" / "dev.tsv").is_file():
        pytest.skip("shared SST-2 data not available (set OBERT_DATA_DIR)")
    monkeypatch.setenv("OBERT_DATA_DIR", str(root))  # the default dataset comes from here
    report = evaluate(tiny_checkpoint, [dynamic_onnx], seq_len=16, max_samples=24)
    assert report.data.endswith("SST-2/dev.tsv") and report.num_examples == 24
    assert report.results[1].agreement == 1.0


def test_data_dir_is_an_argument_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library knows no repository layout: no argument and no $OBERT_DATA_DIR is an error."""
    from obert_deploy.evaluation import data_dir, default_dataset

    monkeypatch.delenv("OBERT_DATA_DIR", raising=False)
    with pytest.raises(ObertDeployError, match="OBERT_DATA_DIR is not set"):
        data_dir()
    with pytest.raises(ObertDeployError, match=r"pass a data file explicitly \(--data\)"):
        default_dataset("sequence-classification")
    assert data_dir(tmp_path) == tmp_path
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nok\t1\n", encoding="utf-8")
    assert (
        default_dataset("sequence-classification", root=tmp_path) == tmp_path / "SST-2" / "dev.tsv"
    )
    monkeypatch.setenv("OBERT_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(ObertDeployError, match=r"default dataset SQuAD/dev-v1.1.json .* not found"):
        default_dataset("question-answering")


def test_evaluate_without_data_or_data_dir_says_what_to_pass(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OBERT_DATA_DIR", raising=False)
    with pytest.raises(ObertDeployError, match=r"--data\), or set OBERT_DATA_DIR"):
        evaluate(tiny_checkpoint, [], seq_len=16)
