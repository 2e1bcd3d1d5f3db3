"""Structured pruning (FFN neurons, heads) through the shared lifecycle, on tiny models."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from transformers import (
    BertForSequenceClassification,
    BertTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
)

from obert_train import ObertTrainError, create_method, load_task, oneshot_prune
from obert_train.pruning.layout import find_attention, find_ffns

from .conftest import tiny_config


def _model(tokenizer: BertTokenizer, heads: int = 4) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = tiny_config(len(tokenizer), num_labels=2, num_attention_heads=heads)
    return BertForSequenceClassification(config).eval()


def _prune(model: Any, task: Any, sparsity: float, **settings: Any) -> Any:
    base = {"num_batches": 3, "grad_batch_size": 4, "min_keep": 8, "multiple": 8}
    return oneshot_prune(
        model, "structured", sparsity, settings={**base, **settings}, task=task,
        progress=False, log=lambda _l: None,
    )  # fmt: skip


@pytest.mark.parametrize("score", ["heapr", "heapr-full", "magnitude", "activation", "random"])
@pytest.mark.parametrize("correct", [True, False])
def test_neurons_are_removed_whole_and_stay_masked(
    tokenizer: BertTokenizer, sst2_dir: Any, score: str, correct: bool
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _model(tokenizer)
    result = _prune(model, task, 0.5, score=score, correct=correct)
    removed = 0
    for layer in model.bert.encoder.layer:
        down = layer.output.dense.weight
        dead = (down == 0).all(0)
        removed += int(dead.sum())
        # a removed neuron is zero everywhere: its up row, up bias and down column
        assert bool((layer.intermediate.dense.weight[dead] == 0).all())
        assert bool((layer.intermediate.dense.bias[dead] == 0).all())
        kept = int((~dead).sum())
        assert kept % 8 == 0 and kept >= 8  # multiple and min_keep
    assert removed == 64  # half of 2 x 64 neurons
    down_name = "bert.encoder.layer.0.output.dense.weight"
    mask = result.masks[down_name].reshape(model.bert.encoder.layer[0].output.dense.weight.shape)
    assert bool(
        (~mask).all(0).sum() == (model.bert.encoder.layer[0].output.dense.weight == 0).all(0).sum()
    )


def test_heads_are_removed_as_blocks(tokenizer: BertTokenizer, sst2_dir: Any) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _model(tokenizer)
    _prune(model, task, 0.5, structure="heads")
    dh, gone = 8, 0
    for layer in model.bert.encoder.layer:
        out = layer.attention.output.dense.weight.reshape(32, 4, dh)
        dead = (out == 0).all(0).all(-1)
        assert int((~dead).sum()) >= 1  # a layer keeps at least one head
        for h in dead.nonzero().flatten().tolist():
            rows = slice(h * dh, (h + 1) * dh)
            for proj in (layer.attention.self.query, layer.attention.self.key):
                assert bool((proj.weight[rows] == 0).all()) and bool((proj.bias[rows] == 0).all())
        gone += int(dead.sum())
    assert gone == 4


def test_removing_neurons_with_the_correction_keeps_outputs_closer(
    tokenizer: BertTokenizer, sst2_dir: Any
) -> None:
    """The OBS re-fit (least squares on E[a aᵀ]) reduces the change of the layer outputs."""
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    batch = task.collate(task.train_features[:12])
    reference = _model(tokenizer)
    with torch.no_grad():
        ref = reference(**batch, output_hidden_states=True).hidden_states[1]
    errors = {}
    for correct in (False, True):
        model = _model(tokenizer)
        _prune(
            model, task, 0.5, score="magnitude", correct=correct, num_batches=6, grad_batch_size=6
        )
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True).hidden_states[1]
        errors[correct] = float((out - ref).square().mean())
    assert errors[True] < errors[False]


def test_a_second_step_never_regrows_and_counts_atoms(
    tokenizer: BertTokenizer, sst2_dir: Any
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _model(tokenizer)
    _prune(model, task, 0.25)
    first = [(layer.output.dense.weight == 0).all(0).clone() for layer in model.bert.encoder.layer]
    _prune(model, task, 0.5)
    for layer, before in zip(model.bert.encoder.layer, first, strict=True):
        now = (layer.output.dense.weight == 0).all(0)
        assert bool(now[before].all())
    with pytest.raises(ValueError, match=r"regrow|beyond|removed"):
        _prune(model, task, 0.25)


def test_llama_mlp_layout_and_gqa_refusal() -> None:
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    ffns = find_ffns(model)
    assert len(ffns) == 2 and ffns[0].down_name.endswith("mlp.down_proj")
    assert {n.rsplit(".", 1)[-1] for n in ffns[0].up_names} == {"up_proj", "gate_proj"}
    with pytest.raises(ObertTrainError, match="grouped-query attention"):
        find_attention(model)


def test_bad_settings_and_layouts(tokenizer: BertTokenizer, sst2_dir: Any) -> None:
    with pytest.raises(ValueError, match="structure"):
        create_method("structured", structure="layers")
    with pytest.raises(ValueError, match="score"):
        create_method("structured", score="taylor")
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    with pytest.raises(ObertTrainError, match="mask_type"):
        _prune(_model(tokenizer), task, 0.5, mask_type="block4")
    with pytest.raises(ObertTrainError, match="at least one batch of 64"):
        _prune(_model(tokenizer), task, 0.5, grad_batch_size=64)
    with pytest.raises(ObertTrainError, match="no FFN of a known layout"):
        find_ffns(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_the_cli_prunes_heads_then_neurons(
    tiny_model_dir: Any, sst2_dir: Any, tmp_path: Any
) -> None:
    from transformers import AutoModelForSequenceClassification
    from typer.testing import CliRunner

    from obert_train.cli.app import app

    def oneshot(model: Any, out: Any, *extra: str) -> None:
        args = [
            "oneshot", "--model", str(model), "--task", "sst2", "--data-dir", str(sst2_dir),
            "--method", "structured", "--sparsity", "0.5", "--output-dir", str(out),
            "--no-progress", "--set", "num_batches=2", "--set", "grad_batch_size=4",
            "--set", "min_keep=8", "--set", "multiple=8", *extra,
        ]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output

    oneshot(tiny_model_dir, tmp_path / "heads", "--set", "structure=heads")
    oneshot(tmp_path / "heads" / "sparsity-0.50", tmp_path / "both", "--eval")
    report = json.loads((tmp_path / "both" / "sparsity-0.50" / "structure.json").read_text())
    assert report["structure"] == "neurons" and sum(map(len, report["removed"].values())) == 64
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "both" / "sparsity-0.50")
    layer = model.bert.encoder.layer
    assert sum(int((m.output.dense.weight == 0).all(0).sum()) for m in layer) == 64
    assert (
        sum(
            int((m.attention.output.dense.weight.reshape(32, 2, 16) == 0).all(0).all(-1).sum())
            for m in layer
        )
        == 2
    )


def _tiny_moe() -> Any:
    from transformers import OlmoeConfig, OlmoeForCausalLM

    torch.manual_seed(0)
    config = OlmoeConfig(
        vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=64,
    )  # fmt: skip
    return OlmoeForCausalLM(config).eval()


class _LMTask:
    """A causal-LM task in the shape oneshot_prune reads: features, collate."""

    def __init__(self, n: int = 24, seq: int = 12) -> None:
        gen = torch.Generator().manual_seed(1)
        ids = torch.randint(0, 64, (n, seq), generator=gen)
        self.train_features = [{"input_ids": row, "labels": row} for row in ids]

    @staticmethod
    def collate(features: Any) -> dict[str, torch.Tensor]:
        ids = torch.stack([f["input_ids"] for f in features])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def test_the_experts_wrapper_computes_what_transformers_computes() -> None:
    """Calibration wraps the fused-experts forward: the model's outputs must not change."""
    from obert_core import StructuredStats
    from obert_train.pruning.structured import _wrap_experts

    model, task = _tiny_moe(), _LMTask()
    batch = task.collate(task.train_features[:4])
    with torch.no_grad():
        reference = model(**batch).logits
    block = model.model.layers[0].mlp.experts
    stats = {
        f"model.layers.{i}.mlp.experts.{e}": StructuredStats(block.down_proj.detach()[e])
        for i in range(2)
        for e in range(4)
    }
    wrapped = _wrap_experts(model, stats, {"mask": None}, need_grads=True)
    model(**batch).loss.backward()
    for module in wrapped:
        del module.forward
    with torch.no_grad():
        again = model(**batch).logits
    assert torch.allclose(reference, again)
    routed = sum(s.num_tokens for s in stats.values())
    assert routed == 2 * 2 * 4 * 12  # every token goes to top-2 experts in each of 2 layers
    assert all(s.num_grad_tokens == s.num_tokens for s in stats.values())


@pytest.mark.parametrize("score", ["heapr", "heapr-full", "frequency", "magnitude", "random"])
def test_atomic_experts_are_removed_from_fused_tensors(score: str) -> None:
    model, task = _tiny_moe(), _LMTask()
    result = oneshot_prune(
        model, "structured", 0.5,
        settings={"structure": "experts", "score": score, "num_batches": 3, "grad_batch_size": 8,
                  "min_keep": 0, "multiple": 1,
                  "targets": [r"mlp\.experts\.(gate_up|down)_proj$"]},
        task=task, progress=False, log=lambda _l: None,
    )  # fmt: skip
    gone = 0
    for layer in model.model.layers:
        experts = layer.mlp.experts
        for e in range(4):
            dead = (experts.down_proj[e] == 0).all(0)
            gone += int(dead.sum())
            assert bool((experts.gate_up_proj[e][:32][dead] == 0).all())  # gate rows
            assert bool((experts.gate_up_proj[e][32:][dead] == 0).all())  # up rows
    assert gone == 128  # half of 2 layers x 4 experts x 32 neurons
    assert result.sparsity > 0.4
    with torch.no_grad():
        assert torch.isfinite(model(**task.collate(task.train_features[:4])).logits).all()


GRADUAL = """
modifiers:
  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 3.0}
pruning_modifiers:
  - !StructuredPruningModifier
    params: ["re:.*encoder.*dense.weight"]
    init_sparsity: 0.25
    final_sparsity: 0.5
    start_epoch: 0.0
    end_epoch: 2.0
    update_frequency: 1.0
    structure: neurons
    num_batches: 2
    grad_sampler_kwargs: {batch_size: 4}
    min_keep: 8
    multiple: 8
"""


def test_gradual_structured_pruning_in_the_trainer(
    tokenizer: BertTokenizer, sst2_dir: Any, tmp_path: Any
) -> None:
    """The recipe tag runs through the HF callback: steps at epochs 0, 1, 2, atoms stay removed."""
    from obert_train import RunOptions, load_recipe, run_recipe

    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _model(tokenizer)
    result = run_recipe(
        load_recipe(GRADUAL), model, task, tmp_path / "run",
        options=RunOptions(batch_size=4, progress=False), log=lambda _l: None,
    )  # fmt: skip
    assert [s["epoch"] for s in result.pruning_steps] == [0.0, 1.0, 2.0]
    dead = [int((m.output.dense.weight == 0).all(0).sum()) for m in model.bert.encoder.layer]
    assert sum(dead) == 64  # half of 2 x 64 neurons at the end, after training in between
    for layer in model.bert.encoder.layer:
        gone = (layer.output.dense.weight == 0).all(0)
        assert bool((layer.intermediate.dense.weight[gone] == 0).all())


def test_only_targeted_layers_are_pruned_and_frequency_needs_experts(
    tokenizer: BertTokenizer, sst2_dir: Any
) -> None:
    """Atoms of a layer whose output projection is not a target would not stay masked."""
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _model(tokenizer)
    _prune(model, task, 0.5, targets=[r"encoder\.layer\.0\..*dense\.weight$"])
    dead = [int((m.output.dense.weight == 0).all(0).sum()) for m in model.bert.encoder.layer]
    assert dead[0] == 32 and dead[1] == 0
    with pytest.raises(ObertTrainError, match="no target tensor is an output projection"):
        _prune(_model(tokenizer), task, 0.5, targets=[r"intermediate\.dense\.weight$"])
    with pytest.raises(ObertTrainError, match="score 'frequency'"):
        _prune(_model(tokenizer), task, 0.5, score="frequency")


def test_experts_computed_another_way_are_refused() -> None:
    from obert_train.pruning.layout import find_experts

    model = _tiny_moe()
    model.model.layers[1].mlp.experts.has_post_expert_norm = True
    with pytest.raises(ObertTrainError, match=r"layers\.1\.mlp\.experts .*has_post_expert_norm"):
        find_experts(model)


def test_a_run_with_targets_off_the_layout_writes_nothing(
    tokenizer: BertTokenizer, sst2_dir: Any, tmp_path: Any
) -> None:
    """Layout / target errors of structured pruning come before the run folder is touched."""
    from obert_train import RunOptions, load_recipe, run_recipe

    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    recipe = load_recipe(GRADUAL.replace("re:.*encoder.*dense.weight", "re:.*intermediate.*weight"))
    out = tmp_path / "run"
    with pytest.raises(ObertTrainError, match="no target tensor is an output projection"):
        run_recipe(
            recipe, _model(tokenizer), task, out,
            options=RunOptions(batch_size=4, progress=False), log=lambda _l: None,
        )  # fmt: skip
    assert not out.exists()
