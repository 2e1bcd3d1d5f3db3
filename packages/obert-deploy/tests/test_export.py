"""Export: parity with PyTorch, sparsity survives, engine-specific defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from obert_deploy import (
    ExportConfig,
    ObertDeployError,
    export_onnx,
    linear_weights,
    load_onnx,
    match_sparsity,
    onnx_inputs,
    onnx_weight_sparsity,
)


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _feeds(batch: int, seq: int, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[0, seq // 2 :] = 0
    return {
        "input_ids": rng.integers(1, 80, (batch, seq)).astype(np.int64),
        "attention_mask": mask,
        "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
    }


def _torch(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.as_tensor(v) for k, v in feeds.items()}).logits.numpy()


def test_engine_defaults() -> None:
    assert ExportConfig(engine="deepsparse").resolved_static_shapes is True
    assert ExportConfig(engine="deepsparse").resolved_opset == 18
    assert ExportConfig(engine="onnxruntime").resolved_static_shapes is False
    assert ExportConfig(engine="onnxruntime").resolved_opset == 18
    assert ExportConfig(engine="onnxruntime", static_shapes=True).resolved_static_shapes is True


def test_static_export_for_deepsparse(static_onnx: Path, tiny_model: torch.nn.Module) -> None:
    model = load_onnx(static_onnx)
    assert model.ir_version <= 8  # DeepSparse 1.8 / onnx 1.14 read IR <= 9
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" not in ops  # decomposed: DeepSparse has no kernel for it
    assert {i.name: i.shape for i in onnx_inputs(model)} == {
        "input_ids": (2, 16),
        "attention_mask": (2, 16),
        "token_type_ids": (2, 16),
    }
    onnx.checker.check_model(model)
    feeds = _feeds(2, 16)
    np.testing.assert_allclose(_ort(static_onnx, feeds), _torch(tiny_model, feeds), atol=1e-5)


def test_dynamic_export_runs_at_any_shape(dynamic_onnx: Path, tiny_model: torch.nn.Module) -> None:
    model = load_onnx(dynamic_onnx)
    assert all(isinstance(d, str) for spec in onnx_inputs(model) for d in spec.shape)
    for batch, seq in [(1, 7), (3, 16), (5, 40)]:
        feeds = _feeds(batch, seq, seed=batch)
        np.testing.assert_allclose(_ort(dynamic_onnx, feeds), _torch(tiny_model, feeds), atol=1e-5)


def test_sparsity_survives_in_initializers(static_onnx: Path, tiny_model: torch.nn.Module) -> None:
    rows = match_sparsity(linear_weights(tiny_model), load_onnx(static_onnx))
    pruned = [r for r in rows if r.pruned]
    assert len(pruned) == 12  # 6 encoder Linear weights x 2 layers
    for row in pruned:
        assert row.same_zeros and row.onnx_initializer is not None
        assert row.onnx_sparsity == pytest.approx(row.torch_sparsity)
        assert row.torch_sparsity == pytest.approx(0.8, abs=0.01)
    # Independently of the matcher: the ONNX file holds 12 weights that are 80 % zeros.
    sparse = [w for w in onnx_weight_sparsity(load_onnx(static_onnx)) if w.sparsity > 0.7]
    assert len(sparse) == 12


def test_matcher_detects_a_changed_weight(static_onnx: Path, tiny_model: torch.nn.Module) -> None:
    model = load_onnx(static_onnx)
    name = next(
        r.onnx_initializer for r in match_sparsity(linear_weights(tiny_model), model) if r.pruned
    )
    init = next(i for i in model.graph.initializer if i.name == name)
    array = onnx.numpy_helper.to_array(init).copy()
    array[array == 0] = 1e-3  # the zeros are gone
    init.CopyFrom(onnx.numpy_helper.from_array(array, name))
    rows = {r.name: r for r in match_sparsity(linear_weights(tiny_model), model)}
    lost = [r for r in rows.values() if r.pruned and not r.same_zeros]
    assert len(lost) == 1


def test_export_report(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    out = tmp_path / "m.onnx"
    report = export_onnx(
        tiny_model, out, ExportConfig(engine="deepsparse", batch_size=1, seq_len=8)
    )
    assert out.is_file()
    assert report.opset == 18 and report.ir_version == 8
    assert report.input_shapes["input_ids"] == [1, 8]
    assert 0 <= report.max_abs_diff["logits"] < 1e-4
    assert len(report.pruned_weights) == 12
    text = report.to_markdown()
    assert "zeros kept in ONNX: 12 of 12" in text
    assert "bert.encoder.layer.1.output.dense.weight" in text
    rows = report.to_dict()["sparsity"]
    assert sum(row["pruned"] for row in rows) == 12
    assert {row["name"] for row in rows if not row["pruned"]} == {
        "bert.pooler.dense.weight",
        "classifier.weight",
    }
    assert all(row["onnx_sparsity"] == row["torch_sparsity"] for row in rows)
    # the caller's model keeps its attention implementation
    assert tiny_model.config._attn_implementation == "eager"


def test_export_other_tasks(tmp_path: Path, tiny_qa_checkpoint: Path) -> None:
    report = export_onnx(
        tiny_qa_checkpoint,
        tmp_path / "qa.onnx",
        ExportConfig(task="question-answering", engine="deepsparse", seq_len=8),
    )
    assert report.output_names == ["start_logits", "end_logits"]
    assert [o.name for o in load_onnx(tmp_path / "qa.onnx").graph.output] == report.output_names


@pytest.mark.slow
@pytest.mark.parametrize("task", ["masked-lm", "feature-extraction"])
def test_export_slow_tasks(tmp_path: Path, tiny_qa_checkpoint: Path, task: str) -> None:
    report = export_onnx(
        tiny_qa_checkpoint, tmp_path / "m.onnx", ExportConfig(task=task, seq_len=8)
    )
    assert report.max_abs_diff
    encoder = [r for r in report.pruned_weights if "encoder.layer." in r.name]
    assert len(encoder) == 12
    assert all(r.same_zeros for r in report.pruned_weights)


def test_lower_opset_by_conversion(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    report = export_onnx(
        tiny_model, tmp_path / "m14.onnx", ExportConfig(engine="deepsparse", seq_len=8, opset=14)
    )
    assert report.opset == 14
    assert "LayerNormalization" not in {
        n.op_type for n in load_onnx(tmp_path / "m14.onnx").graph.node
    }


def test_opset_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"opset 13 is not supported; use 14\.\.21"):
        ExportConfig(opset=13)
    # DeepSparse's onnx 1.14 reads at most opset 19 at IR 8: capped at 18.
    with pytest.raises(ValueError, match=r"opset 19 is too new for --engine deepsparse.*14\.\.18"):
        ExportConfig(engine="deepsparse", opset=19)
    assert ExportConfig(engine="deepsparse", opset=18).resolved_opset == 18
    assert ExportConfig(engine="onnxruntime", opset=21).resolved_opset == 21


def test_onnx_sparsity_is_measured_from_the_initializer() -> None:
    weight = np.arange(12, dtype=np.float32).reshape(3, 4)  # one zero in 12
    graph = onnx.helper.make_graph(
        [], "g", [], [], initializer=[onnx.numpy_helper.from_array(weight.T.copy(), "w_t")]
    )
    (row,) = match_sparsity({"w": weight}, onnx.helper.make_model(graph))
    assert row.onnx_initializer == "w_t" and row.same_zeros
    assert row.onnx_sparsity == pytest.approx(1 / 12)
    (row,) = match_sparsity({"w": weight + 1}, onnx.helper.make_model(graph))
    assert row.onnx_initializer is None and row.onnx_sparsity is None and not row.same_zeros


def test_dynamic_export_checks_a_second_batch_size(
    tmp_path: Path, tiny_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    import obert_deploy.export._export as export_module

    shapes: list[tuple[int, int]] = []
    original = export_module._check_parity

    def spy(path, wrapper, feeds, output_names, config):  # type: ignore[no-untyped-def]
        shapes.extend(tuple(f["input_ids"].shape) for f in feeds)
        return original(path, wrapper, feeds, output_names, config)

    monkeypatch.setattr(export_module, "_check_parity", spy)
    export_onnx(tiny_model, tmp_path / "d.onnx", ExportConfig(batch_size=1, seq_len=8))
    assert shapes == [(1, 8), (2, 4)]


def test_qa_opset_conversion_failure_is_a_clear_error(
    tmp_path: Path, tiny_qa_checkpoint: Path
) -> None:
    out = tmp_path / "qa14.onnx"
    # onnx's version converter has no Split adapter from opset 18 down to 14.
    with pytest.raises(ObertDeployError, match=r"opset 14.*--opset.*question-answering"):
        export_onnx(
            tiny_qa_checkpoint,
            out,
            ExportConfig(task="question-answering", engine="deepsparse", seq_len=8, opset=14),
        )
    assert list(tmp_path.iterdir()) == []
