"""Shrinking: structurally pruned FFN neurons and heads are physically removed, outputs unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from obert_deploy import (
    ArgumentError,
    ExportConfig,
    ObertDeployError,
    ShrinkReport,
    export_onnx,
    load_checkpoint,
    remove_heads,
    shrink_model,
)
from obert_deploy.cli import app
from obert_deploy.export import rounded_width

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

HIDDEN, HEADS, FFN, LAYERS = 32, 4, 64, 2
HEAD_SIZE = HIDDEN // HEADS
VOCAB = 80


def _bert_config(**kwargs: Any) -> Any:
    return transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=64,
        **kwargs,
    )


def _bert(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(_bert_config(num_labels=2)).eval()


def _structured_(model: Any, columns: dict[int, list[int]], heads: dict[int, list[int]]) -> None:
    """Zero down-projection columns (FFN neurons) and output-projection head blocks."""
    with torch.no_grad():
        for layer, cols in columns.items():
            model.bert.encoder.layer[layer].output.dense.weight[:, cols] = 0
        for layer, hs in heads.items():
            out = model.bert.encoder.layer[layer].attention.output.dense.weight
            for h in hs:
                out[:, h * HEAD_SIZE : (h + 1) * HEAD_SIZE] = 0


def _inputs(seed: int = 3, batch: int = 3, seq: int = 12) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, seq // 2 :] = 0
    return {
        "input_ids": torch.randint(1, VOCAB, (batch, seq), generator=generator),
        "attention_mask": mask,
    }


def _out(model: Any, feeds: dict[str, Any]) -> Any:
    with torch.no_grad():
        result = model(**feeds)
    return result.logits if hasattr(result, "logits") else result[0]


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _ffn_params(neurons: int) -> int:  # up row + up bias + down column
    return neurons * (HIDDEN + 1) + neurons * HIDDEN


def _head_params(heads: int) -> int:  # q/k/v rows + biases, output-projection columns
    return heads * HEAD_SIZE * (3 * (HIDDEN + 1) + HIDDEN)


def test_bert_shrinks_exactly_and_keeps_outputs() -> None:
    model = _bert()
    _structured_(model, {0: list(range(0, FFN, 4)), 1: list(range(48))}, {0: [1, 3], 1: [2]})
    feeds = _inputs()
    before, params = _out(model, feeds), _params(model)
    report = shrink_model(model)
    torch.testing.assert_close(_out(model, feeds), before, atol=1e-5, rtol=0)
    removed = _ffn_params(16 + 48) + _head_params(3)
    assert report.parameters_removed == removed == params - _params(model)
    assert report.neurons_removed == 64 and report.heads_removed == 3
    layer0, layer1 = model.bert.encoder.layer
    assert layer0.intermediate.dense.weight.shape == (48, HIDDEN)
    assert layer0.output.dense.weight.shape == (HIDDEN, 48)
    assert layer1.intermediate.dense.bias.shape == (16,)
    assert layer0.attention.self.query.weight.shape == (2 * HEAD_SIZE, HIDDEN)
    assert layer0.attention.output.dense.weight.shape == (HIDDEN, 2 * HEAD_SIZE)
    assert layer0.attention.self.num_attention_heads == 2
    assert layer1.attention.self.all_head_size == 3 * HEAD_SIZE
    rows = {(row.module, row.kind): row for row in report.rows}
    assert rows["bert.encoder.layer.0", "ffn"].kept == 48  # BERT FFN rows are named by layer
    assert rows["bert.encoder.layer.0.attention", "heads"].removed_indices == (1, 3)
    assert rows["bert.encoder.layer.1", "ffn"].kept == 16
    # Widths differ per layer: the config keeps its value and a note says why.
    assert model.config.intermediate_size == FFN and report.config_updates == {}
    assert any("intermediate_size" in note for note in report.notes)
    # Removed heads are recorded like transformers 4 did (original numbering).
    assert model.config.pruned_heads == {0: [1, 3], 1: [2]}
    json.dumps(report.to_dict())
    assert "| bert.encoder.layer.0.attention | heads | 4 | 2 | 2 (1, 3) |" in report.to_markdown()


def test_uniform_width_updates_config_and_dry_run_changes_nothing() -> None:
    model = _bert()
    _structured_(model, {0: list(range(32)), 1: list(range(32, 64))}, {})
    shapes = [tuple(p.shape) for p in model.parameters()]
    dry = shrink_model(model, dry_run=True)
    assert not dry.applied and dry.changed and dry.parameters_removed == _ffn_params(64)
    assert [tuple(p.shape) for p in model.parameters()] == shapes
    report = shrink_model(model)
    assert report.config_updates == {"intermediate_size": 32}
    assert model.config.intermediate_size == 32
    assert report.parameters_removed == dry.parameters_removed


def test_unstructured_sparsity_removes_nothing_unless_a_column_is_zero() -> None:
    model = _bert()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.bert.encoder.modules():
            if isinstance(module, torch.nn.Linear):
                keep = torch.rand(module.weight.shape, generator=generator) > 0.9
                rows, cols = keep.shape
                keep[torch.arange(cols) % rows, torch.arange(cols)] = True  # no empty column
                module.weight.mul_(keep)
                assert float((module.weight == 0).float().mean()) > 0.85
    # 90 % unstructured sparsity, but every column has a non-zero: nothing is removable.
    report = shrink_model(model, dry_run=True)
    assert not report.changed and report.neurons_removed == 0 and report.heads_removed == 0
    # One column entirely zero: exactly that neuron goes (without rounding the width); a zero up
    # row alone removes nothing. By default the width 63 rounds up to 64: nothing is removed.
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.weight[:, 5] = 0
        model.bert.encoder.layer[0].intermediate.dense.weight[7] = 0
    assert not shrink_model(model, dry_run=True).changed
    feeds = _inputs()
    before = _out(model, feeds)
    report = shrink_model(model, width_multiple=1)
    assert report.neurons_removed == 1 and report.heads_removed == 0
    assert report.parameters_removed == _ffn_params(1)
    torch.testing.assert_close(_out(model, feeds), before, atol=1e-5, rtol=0)


def test_fully_zero_layer_keeps_one_neuron_and_one_head() -> None:
    model = _bert()
    _structured_(model, {1: list(range(FFN))}, {1: list(range(HEADS))})
    feeds = _inputs()
    before = _out(model, feeds)
    report = shrink_model(model, width_multiple=1)
    torch.testing.assert_close(_out(model, feeds), before, atol=1e-5, rtol=0)
    layer = model.bert.encoder.layer[1]
    assert layer.output.dense.weight.shape == (HIDDEN, 1)
    assert layer.attention.self.num_attention_heads == 1
    assert sum(row.kept_zero for row in report.rows) == 2
    assert sum("one is kept" in note for note in report.notes) == 2


def _zero_down(model: Any, path: str, cols: slice) -> None:
    with torch.no_grad():
        model.get_submodule(path).weight[:, cols] = 0


def _zero_out_heads(model: Any, path: str, heads: list[int]) -> None:
    with torch.no_grad():
        for h in heads:
            model.get_submodule(path).weight[:, h * HEAD_SIZE : (h + 1) * HEAD_SIZE] = 0


def _roberta() -> Any:
    config = transformers.RobertaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=70,
    )
    model = transformers.RobertaForSequenceClassification(config).eval()
    for i in range(LAYERS):
        _zero_down(model, f"roberta.encoder.layer.{i}.output.dense", slice(0, 40))
    _zero_out_heads(model, "roberta.encoder.layer.1.attention.output.dense", [0, 2])
    return model


def _distilbert() -> Any:
    config = transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN
    )
    model = transformers.DistilBertForSequenceClassification(config).eval()
    for i in range(LAYERS):
        _zero_down(model, f"distilbert.transformer.layer.{i}.ffn.lin2", slice(0, 40))
    _zero_out_heads(model, "distilbert.transformer.layer.1.attention.out_lin", [0, 2])
    return model


def _decoder(config_class: Any, model_class: Any) -> Any:
    config = config_class(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        intermediate_size=FFN,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    model = model_class(config).eval()
    for i in range(LAYERS):
        _zero_down(model, f"model.layers.{i}.mlp.down_proj", slice(0, 40))
    return model


FAMILIES = {
    "roberta": (_roberta, "intermediate_size", 2),
    "distilbert": (_distilbert, "hidden_dim", 2),
    "llama": (
        lambda: _decoder(transformers.LlamaConfig, transformers.LlamaForSequenceClassification),
        "intermediate_size",
        0,
    ),
    "qwen2": (
        lambda: _decoder(transformers.Qwen2Config, transformers.Qwen2ForSequenceClassification),
        "intermediate_size",
        0,
    ),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_other_families_shrink_in_pytorch(family: str) -> None:
    build, width_attr, heads = FAMILIES[family]
    torch.manual_seed(0)
    model = build()
    feeds = _inputs()
    before, params = _out(model, feeds), _params(model)
    report = shrink_model(model, width_multiple=1)
    torch.testing.assert_close(_out(model, feeds), before, atol=1e-5, rtol=0)
    assert report.supported and report.neurons_removed == 2 * 40
    assert report.heads_removed == heads
    assert report.parameters_removed == params - _params(model) > 0
    assert getattr(model.config, width_attr) == FFN - 40
    assert report.config_updates == {width_attr: FFN - 40}


def test_unknown_family_is_skipped_with_a_note() -> None:
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=1, n_head=HEADS)
    model = transformers.GPT2Model(config).eval()
    report = shrink_model(model)
    assert not report.supported and not report.changed
    assert "not recognised" in report.summary()
    assert "mlp.gate_proj" in report.notes[0]  # says which module names were expected
    with pytest.raises(ObertDeployError, match=r"torch\.nn\.Module"):
        shrink_model("not a model")  # type: ignore[arg-type]


def test_remove_heads_like_transformers_4() -> None:
    model = _bert()
    feeds = _inputs()
    remove_heads(model, {0: [1], 1: [0, 3]})
    assert model.bert.encoder.layer[1].attention.self.num_attention_heads == 2
    assert model.bert.encoder.layer[1].attention.self.key.weight.shape == (16, HIDDEN)
    _out(model, feeds)  # still runs with per-layer head counts
    with pytest.raises(ObertDeployError, match="out of range"):
        remove_heads(model, {0: [5]})
    with pytest.raises(ObertDeployError, match="all 2 heads"):
        remove_heads(model, {1: [0, 1]})
    with pytest.raises(ObertDeployError, match="no self-attention module for that layer"):
        remove_heads(model, {7: [0]})


@pytest.fixture(scope="module")
def structured_model() -> Any:
    """Tiny BERT: 75 % of the FFN neurons and half of the heads zeroed in both layers."""
    model = _bert(seed=1)
    _structured_(model, {0: list(range(48)), 1: list(range(16, 64))}, {0: [0, 1], 1: [1, 3]})
    return model


def _matmul_shapes(path: Path) -> set[tuple[int, ...]]:
    proto = onnx.load(str(path))
    matmul_inputs = {
        name for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") for name in n.input
    }
    return {
        tuple(init.dims)
        for init in proto.graph.initializer
        if init.name in matmul_inputs and len(init.dims) == 2
    }


def _ort_logits(path: Path, feeds: dict[str, Any]) -> Any:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    arrays = {k: v.numpy() for k, v in feeds.items()}
    arrays.setdefault("token_type_ids", np.zeros_like(arrays["input_ids"]))
    return session.run(None, {k: arrays[k] for k in names})[0]


def test_export_shrinks_by_default(tmp_path: Path, structured_model: Any) -> None:
    out = tmp_path / "shrunk.onnx"
    shapes = [tuple(p.shape) for p in structured_model.parameters()]
    config = ExportConfig(batch_size=2, seq_len=10, static_shapes=True)
    report = export_onnx(structured_model, out, config)
    # The caller's model is not changed; the ONNX graph is checked against it.
    assert [tuple(p.shape) for p in structured_model.parameters()] == shapes
    assert report.max_abs_diff["logits"] < 1e-5
    feeds = _inputs(batch=2, seq=10)
    np.testing.assert_allclose(
        _ort_logits(out, feeds), _out(structured_model, feeds).numpy(), atol=1e-5
    )
    assert isinstance(report.shrink, ShrinkReport)
    assert report.shrink.neurons_removed == 96 and report.shrink.heads_removed == 4
    assert report.shrink.parameters_removed == _ffn_params(96) + _head_params(4)
    # Smaller MatMul weights: FFN 16 wide, attention 2 heads x 8; nothing 64 wide is left.
    matmuls = _matmul_shapes(out)
    assert {(HIDDEN, 16), (16, HIDDEN)} <= matmuls
    assert not any(FFN in dims for dims in matmuls)
    # The sparsity table describes what remains: no zeros left in the shrunk weights.
    rows = {row.name: row for row in report.sparsity}
    assert rows["bert.encoder.layer.0.output.dense.weight"].shape == (HIDDEN, 16)
    assert rows["bert.encoder.layer.0.output.dense.weight"].torch_sparsity == 0
    assert all(row.same_zeros for row in report.sparsity)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["shrink"]["parameters_removed"] == report.shrink.parameters_removed
    assert {r["kind"] for r in data["shrink"]["rows"]} == {"ffn", "heads"}
    text = report.to_markdown()
    assert "Structured zeros removed: 96 of 128 FFN neurons (2 of 2 layers)" in text
    assert "| bert.encoder.layer.1.attention | heads | 4 | 2 | 2 (1, 3) |" in text


@pytest.mark.slow
def test_export_nothing_to_remove(tmp_path: Path) -> None:
    model = _bert(seed=2)
    report = export_onnx(
        model, tmp_path / "dense.onnx", ExportConfig(batch_size=1, seq_len=8, static_shapes=True)
    )
    assert report.shrink is not None and not report.shrink.changed
    assert "Structured zeros removed: 0 of 128 FFN neurons (0 of 2 layers)" in report.to_markdown()
    assert {(FFN, HIDDEN), (HIDDEN, FFN)} <= _matmul_shapes(tmp_path / "dense.onnx")


@pytest.mark.slow
def test_cli_no_shrink_keeps_shapes(tmp_path: Path, structured_model: Any) -> None:
    checkpoint = tmp_path / "ckpt"
    structured_model.save_pretrained(checkpoint)
    out, report_path = tmp_path / "full.onnx", tmp_path / "full.json"
    result = CliRunner().invoke(
        app,
        [
            *("export", str(checkpoint), "-o", str(out), "--seq-len", "8", "--no-shrink"),
            *("--json", str(report_path)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "kept at their shapes (--no-shrink)" in result.output
    assert json.loads(report_path.read_text())["shrink"] is None
    matmuls = _matmul_shapes(out)
    assert {(HIDDEN, FFN), (FFN, HIDDEN)} <= matmuls
    zeros = [
        float(np.mean(numpy_helper.to_array(init) == 0))
        for init in onnx.load(str(out)).graph.initializer
        if len(init.dims) == 2
    ]
    assert zeros.count(0.75) == 2 and zeros.count(0.5) == 2  # the zeros stay in place


@pytest.mark.slow
def test_pruned_heads_checkpoint_loads_and_exports(tmp_path: Path) -> None:
    """A checkpoint written by transformers 4's prune_heads (config.pruned_heads, smaller
    attention weights) loads in transformers 5 and exports; zero blocks shrink on top."""
    model = _bert(seed=3)
    remove_heads(model, {0: [1, 3], 1: [0]})
    _structured_(model, {1: list(range(20))}, {})
    with torch.no_grad():  # head 2 of layer 1 now (original head 3) is all zero
        model.bert.encoder.layer[1].attention.output.dense.weight[:, 2 * HEAD_SIZE :] = 0
    model.config.pruned_heads = {0: [1, 3], 1: [0]}
    feeds = _inputs()
    expected = _out(model, feeds)
    checkpoint = tmp_path / "pruned"
    model.save_pretrained(checkpoint)
    assert json.loads((checkpoint / "config.json").read_text())["pruned_heads"] == {
        "0": [1, 3],
        "1": [0],
    }
    loaded = load_checkpoint(checkpoint, "sequence-classification").model
    torch.testing.assert_close(_out(loaded, feeds), expected, atol=1e-5, rtol=0)
    assert loaded.bert.encoder.layer[0].attention.self.num_attention_heads == 2
    out = tmp_path / "pruned.onnx"
    config = ExportConfig(seq_len=8, static_shapes=True, width_multiple=1)
    report = export_onnx(checkpoint, out, config)
    assert report.shrink is not None
    assert report.shrink.pruned_heads_on_load == {0: [1, 3], 1: [0]}
    assert report.shrink.heads_removed == 1 and report.shrink.neurons_removed == 20
    assert "3 heads of config.pruned_heads were already absent" in report.to_markdown()
    feeds = _inputs(batch=1, seq=8)
    np.testing.assert_allclose(_ort_logits(out, feeds), _out(loaded, feeds).numpy(), atol=1e-5)


@pytest.mark.slow
def test_decoder_export_shrinks_gated_mlp(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _decoder(transformers.LlamaConfig, transformers.LlamaForSequenceClassification)
    out = tmp_path / "llama.onnx"
    config = ExportConfig(batch_size=2, seq_len=8, static_shapes=True, width_multiple=1)
    report = export_onnx(model, out, config)
    assert report.shrink is not None and report.shrink.neurons_removed == 80
    assert report.max_abs_diff["logits"] < 1e-5
    assert (HIDDEN, FFN - 40) in _matmul_shapes(out)


# Kept FFN widths rounded up to a multiple (issue 21): odd widths slow dense kernels for nothing.


def test_rounded_width_rule() -> None:
    assert rounded_width(1535, 1536, 16) == 1536  # one neuron of a 1,536-wide FFN: keep all
    assert rounded_width(1520, 1536, 16) == 1520
    assert rounded_width(1521, 1536, 16) == 1536
    assert rounded_width(1000, 1536, 16) == 1008
    assert rounded_width(1000, 1536, 1) == 1000
    assert rounded_width(0, 1536, 16) == 16 and rounded_width(0, 1536, 1) == 1
    assert rounded_width(3, 10, 16) == 10  # never wider than the layer


@pytest.mark.parametrize("multiple", [1, 8, 16, 24])
def test_kept_widths_are_multiples_and_outputs_unchanged(multiple: int) -> None:
    """Any pattern of dead neurons: widths rounded up, outputs those of the unshrunk model."""
    model = _bert(seed=5)
    generator = torch.Generator().manual_seed(multiple)
    dead = {
        layer: sorted(torch.randperm(FFN, generator=generator)[:count].tolist())
        for layer, count in ((0, 37), (1, 5))
    }
    _structured_(model, dead, {})
    feeds = _inputs()
    reference = _out(model, feeds)
    report = shrink_model(model, width_multiple=multiple)
    torch.testing.assert_close(_out(model, feeds), reference, atol=1e-5, rtol=0)
    for layer, row in enumerate(r for r in report.rows if r.kind == "ffn"):
        alive = FFN - len(dead[layer])
        assert row.kept == rounded_width(alive, FFN, multiple)
        assert row.kept % multiple == 0 or row.kept == FFN
        assert row.kept_zero == row.kept - alive
        width = model.bert.encoder.layer[layer].output.dense.weight.shape[1]
        assert width == row.kept
        # The kept dead neurons are all-zero columns: exactly kept - alive of them.
        down = model.bert.encoder.layer[layer].output.dense.weight
        assert int((down == 0).all(dim=0).sum()) == row.kept_zero
    assert report.width_multiple == multiple and report.to_dict()["width_multiple"] == multiple
    padded = sum(row.kept_zero for row in report.rows)
    rounded = f"rounded up to a multiple of {multiple}: {padded} all-zero neurons kept"
    assert (rounded in report.summary()) is (multiple > 1 and padded > 0)


def test_padding_keeps_the_largest_up_rows() -> None:
    model = _bert(seed=1)
    layer = model.bert.encoder.layer[0]
    _structured_(model, {0: list(range(20))}, {})  # 44 alive -> 48 kept: 4 dead ones stay
    with torch.no_grad():
        layer.intermediate.dense.weight[[3, 11, 12, 17]] *= 100  # the largest dead up rows
    up_rows = layer.intermediate.dense.weight.detach().clone()
    shrink_model(model, width_multiple=16)
    kept_up = model.bert.encoder.layer[0].intermediate.dense.weight.detach()
    assert kept_up.shape == (48, HIDDEN)
    torch.testing.assert_close(kept_up[:4], up_rows[[3, 11, 12, 17]])  # index order is kept
    torch.testing.assert_close(kept_up[4:], up_rows[20:])


def test_heads_are_not_rounded() -> None:
    model = _bert()
    _structured_(model, {}, {0: [1]})
    report = shrink_model(model, width_multiple=16)
    assert report.heads_removed == 1 and report.neurons_removed == 0
    assert model.bert.encoder.layer[0].attention.self.num_attention_heads == 3


@pytest.mark.parametrize("bad", [0, -16])
def test_width_multiple_below_one_is_refused(bad: int) -> None:
    with pytest.raises(ObertDeployError, match=rf"width_multiple must be >= 1, got {bad}"):
        shrink_model(_bert(), width_multiple=bad)
    with pytest.raises(ObertDeployError, match="width_multiple must be >= 1"):
        ExportConfig(width_multiple=bad)


def test_width_multiple_must_be_an_int() -> None:
    with pytest.raises(ArgumentError, match="width_multiple"):
        shrink_model(_bert(), width_multiple=16.0)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="width_multiple"):
        ExportConfig(width_multiple="16")  # type: ignore[arg-type]


def test_cli_export_width_multiple(tmp_path: Path, structured_model: Any) -> None:
    """The structured model's FFNs keep 16 of 64 neurons: --width-multiple 24 keeps 24, and
    --width-multiple with --no-shrink is refused before any work."""
    checkpoint = tmp_path / "ckpt"
    structured_model.save_pretrained(checkpoint)
    out = tmp_path / "w24.onnx"
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(checkpoint),
            "-o",
            str(out),
            *("--max-seq-length", "8"),
            "--width-multiple",
            "24",
        ],
    )
    assert result.exit_code == 0, result.output
    assert {(HIDDEN, 24), (24, HIDDEN)} <= _matmul_shapes(out)
    refused = tmp_path / "refused.onnx"
    result = CliRunner().invoke(
        app,
        ["export", str(checkpoint), "-o", str(refused), "--no-shrink", "--width-multiple", "8"],
    )
    assert result.exit_code == 2 and "--no-shrink keeps every shape" in result.output
    assert not refused.exists()
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "-o", str(refused), "--width-multiple", "0"]
    )
    assert result.exit_code == 2 and "0 is below 1" in result.output
