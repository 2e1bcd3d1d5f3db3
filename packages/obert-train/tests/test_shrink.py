"""Uniform allocation of structured pruning, and physically smaller checkpoints (issue 21).

Oracles: ``uniform_kept`` against a brute-force enumeration of the allowed sizes; the atoms a
uniform step keeps against each layer's own top-k magnitude scores; the shrunk model against
the zero-padded one (outputs to 1e-5) and against plain ``from_pretrained`` of what it saved.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
)
from typer.testing import CliRunner

from obert_train import ModelError, TargetError, load_task, oneshot_prune
from obert_train.cli import app
from obert_train.pruning.structured import uniform_kept
from obert_train.shrink import check_same_outputs, max_output_difference, save_shrunk, shrink_model

from .conftest import tiny_config

runner = CliRunner()


def _model(tokenizer: BertTokenizer, heads: int = 4, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = tiny_config(
        len(tokenizer), num_labels=2, num_attention_heads=heads, num_hidden_layers=3
    )
    return BertForSequenceClassification(config).eval()


def _prune(model: Any, task: Any, sparsity: float, **extra: Any) -> Any:
    base = {"num_batches": 2, "grad_batch_size": 4, "min_keep": 8, "multiple": 8}
    return oneshot_prune(
        model, "structured", sparsity, settings={**base, **extra}, task=task,
        progress=False, log=lambda _l: None,
    )  # fmt: skip


def _non_uniform(model: Any, task: Any) -> Any:
    """Global allocation with layer 0's FFN weights scaled down: layer 0 loses more neurons."""
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.weight.mul_(0.2)
    _prune(model, task, 0.5, score="magnitude")
    return model


def _kept_neurons(model: Any) -> list[int]:
    return [int(m.output.dense.weight.ne(0).any(0).sum()) for m in model.bert.encoder.layer]


def _kept_heads(model: Any, heads: int) -> list[int]:
    out = []
    for layer in model.bert.encoder.layer:
        w = layer.attention.output.dense.weight
        out.append(int(w.reshape(w.shape[0], heads, -1).ne(0).any(-1).any(0).sum()))
    return out


# --- uniform_kept: the one kept count ---------------------------------------------------------


def _brute_kept(count: int, sparsity: float, min_keep: int, multiple: int) -> int | None:
    """Nearest allowed size by enumeration (ties: more kept); None where the rule refuses."""
    target = (1 - sparsity) * count
    sizes = sorted({count} | set(range(0, count + 1, multiple)))
    best = min(sizes, key=lambda k: (abs(k - target), -k))
    return best if best >= max(min_keep, 1) else None


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(1, 400),
    sparsity=st.floats(0, 0.999),
    min_keep=st.integers(0, 40),
    multiple=st.sampled_from([1, 2, 8, 16]),
)
def test_uniform_kept_is_the_nearest_allowed_size(
    count: int, sparsity: float, min_keep: int, multiple: int
) -> None:
    want = _brute_kept(count, sparsity, min_keep, multiple)
    if want is None:
        with pytest.raises(TargetError, match="allocation 'uniform'"):
            uniform_kept(count, sparsity, min_keep=min_keep, multiple=multiple)
        return
    assert uniform_kept(count, sparsity, min_keep=min_keep, multiple=multiple) == want


def test_uniform_kept_errors_name_the_budget_and_the_fix() -> None:
    with pytest.raises(TargetError, match=r"keeps 0 of the 12 heads.*empty.*at most 0\.9583"):
        uniform_kept(12, 0.97, min_keep=1, multiple=1, what="heads")
    with pytest.raises(TargetError, match=r"keeps 16 of the 64 .*below min_keep=32"):
        uniform_kept(64, 0.75, min_keep=32, multiple=16)
    assert uniform_kept(1536, 0.7, min_keep=16, multiple=16) == 464  # MiniLM-L6 at 70 %
    assert uniform_kept(12, 0.5, min_keep=1, multiple=1) == 6


# --- uniform allocation in structured pruning ------------------------------------------------


def test_uniform_neurons_keep_each_layers_own_top_scores(
    tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    """Every layer keeps k = uniform_kept(...) neurons: its k largest magnitude scores."""
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _model(tokenizer)
    before = copy.deepcopy(model)
    _prune(model, task, 0.6, score="magnitude", correct=False, allocation="uniform")
    k = uniform_kept(64, 0.6, min_keep=8, multiple=8)
    assert _kept_neurons(model) == [k, k, k]
    for old, new in zip(before.bert.encoder.layer, model.bert.encoder.layer, strict=True):
        up, down = old.intermediate.dense.weight.double(), old.output.dense.weight.double()
        score = up.norm(dim=1) * down.norm(dim=0)
        want = set(torch.topk(score, k).indices.tolist())
        assert set(new.output.dense.weight.ne(0).any(0).nonzero().flatten().tolist()) == want


def test_global_allocation_differs_and_uniform_heads_are_uniform(
    tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _model(tokenizer)
    _prune(model, task, 0.5, structure="heads", allocation="uniform")
    assert _kept_heads(model, 4) == [2, 2, 2]
    _prune(model, task, 0.75, structure="heads", allocation="uniform")  # a second step
    assert _kept_heads(model, 4) == [1, 1, 1]


def test_a_budget_that_empties_the_layers_is_refused_before_any_change(
    tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _model(tokenizer)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TargetError, match=r"keeps 0 of the 4 heads .*every layer would be empty"):
        _prune(model, task, 0.9, structure="heads", allocation="uniform")
    with pytest.raises(TargetError, match="below min_keep=32"):
        _prune(model, task, 0.8, allocation="uniform", min_keep=32)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_layers_of_different_sizes_cannot_be_made_uniform(
    tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _model(tokenizer)
    layer = model.bert.encoder.layer[1]
    layer.intermediate.dense = torch.nn.Linear(32, 48)
    layer.output.dense = torch.nn.Linear(48, 32)
    with pytest.raises(TargetError, match=r"different numbers \(.*layer\.1\.output\.dense: 48"):
        _prune(model, task, 0.5, allocation="uniform")
    _prune(model, task, 0.5)  # global allocation takes them
    with pytest.raises(ValueError, match=r"allocation 'uniform'.*experts"):
        _prune(_model(tokenizer), task, 0.5, structure="experts", allocation="uniform")


def test_uniform_after_a_global_step_never_regrows(
    tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _non_uniform(_model(tokenizer), task)
    low = min(_kept_neurons(model))
    assert low < 32  # a layer below the uniform count of 50 %: refused, naming it
    with pytest.raises(TargetError, match=r"layer\.0\.output\.dense has only .* left"):
        _prune(model, task, 0.5, allocation="uniform")
    _prune(model, task, 1 - low / 64, allocation="uniform", score="random")
    assert _kept_neurons(model) == [low] * 3


# --- shrink_model -------------------------------------------------------------------------------


def _pruned_uniform(tokenizer: BertTokenizer, task: Any) -> Any:
    model = _model(tokenizer)
    _prune(model, task, 0.5, allocation="uniform")
    _prune(model, task, 0.5, structure="heads", allocation="uniform")
    return model


def test_shrunk_checkpoint_loads_in_plain_transformers_with_equal_outputs(
    tokenizer: BertTokenizer, sst2_dir: Path, tmp_path: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    padded = _pruned_uniform(tokenizer, task)
    model = copy.deepcopy(padded)
    report = shrink_model(model)
    assert report["intermediate_size"] == {"before": 64, "after": 32}
    assert report["kept_neurons"] == [32, 32, 32] and report["kept_heads"] == [2, 2, 2]
    assert "no head_dim" in report["heads"]  # BERT: heads stay zero-padded (transformers 5)
    assert report["parameters"]["after"] < report["parameters"]["before"]
    model.save_pretrained(tmp_path / "small")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "small").eval()
    assert loaded.config.intermediate_size == 32
    for layer in loaded.bert.encoder.layer:
        assert tuple(layer.intermediate.dense.weight.shape) == (32, 32)
        assert tuple(layer.output.dense.weight.shape) == (32, 32)
    batch = task.collate(task.train_features[:6])
    batch.pop("labels", None)
    assert max_output_difference(loaded, padded, batch) <= 1e-5
    assert max_output_difference(loaded, padded) <= 1e-5


def test_different_widths_are_refused_or_padded_to_the_widest(
    tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _non_uniform(_model(tokenizer), task)
    counts = _kept_neurons(model)
    assert len(set(counts)) > 1  # global allocation: layers differ
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelError, match=r"different numbers of FFN neurons.*zero-padded.*ONNX"):
        shrink_model(model)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    padded = copy.deepcopy(model)
    report = shrink_model(model, pad=True)
    assert report["padded"] and report["intermediate_size"]["after"] == max(counts)
    assert max_output_difference(model, padded) <= 1e-5


def test_a_layer_without_neurons_is_refused(tokenizer: BertTokenizer) -> None:
    model = _model(tokenizer)
    with torch.no_grad():
        model.bert.encoder.layer[2].output.dense.weight.zero_()
    with pytest.raises(ModelError, match=r"layer\.2 has no FFN neuron left"):
        shrink_model(model)


def test_llama_heads_and_neurons_shrink_with_head_dim(tmp_path: Path) -> None:
    """A config that states head_dim takes fewer heads: num_attention_heads changes too."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.mlp.down_proj.weight[:, i * 8 : i * 8 + 16] = 0
            layer.self_attn.o_proj.weight[:, (1 - i) * 16 : (1 - i) * 16 + 16] = 0
    padded = copy.deepcopy(model)
    report = shrink_model(model)
    assert report["heads"] == "removed"
    assert report["num_attention_heads"] == {"before": 4, "after": 2}
    model.save_pretrained(tmp_path / "llama")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "llama").eval()
    assert (loaded.config.num_attention_heads, loaded.config.intermediate_size) == (2, 32)
    assert tuple(loaded.model.layers[0].self_attn.q_proj.weight.shape) == (16, 32)
    assert max_output_difference(loaded, padded) <= 1e-5


def test_check_same_outputs_compares_every_output_on_the_given_inputs(
    tokenizer: BertTokenizer,
) -> None:
    """A difference in the second output (QA end logits) alone is caught, on ``inputs=`` too."""
    torch.manual_seed(0)
    padded = BertForQuestionAnswering(tiny_config(len(tokenizer), num_hidden_layers=2)).eval()
    same = copy.deepcopy(padded)
    assert check_same_outputs(same, padded) == 0.0
    changed = copy.deepcopy(padded)
    with torch.no_grad():
        changed.qa_outputs.bias[1] += 0.5  # end logits only
    batch = {
        "input_ids": torch.tensor([[2, 5, 7, 9, 3]]),
        "attention_mask": torch.ones(1, 5, dtype=torch.long),
    }
    with torch.no_grad():
        ends = changed(**batch).end_logits.double() - padded(**batch).end_logits.double()
        starts = changed(**batch).start_logits.double() - padded(**batch).start_logits.double()
    assert float(starts.abs().max()) == 0.0
    assert max_output_difference(changed, padded, batch) == pytest.approx(0.5, rel=1e-6)
    assert max_output_difference(changed, padded, batch) == float(ends.abs().max())
    with pytest.raises(ModelError, match=r"outputs differ from the zero-padded model's by 0\.5"):
        check_same_outputs(changed, padded, inputs=batch)
    with pytest.raises(ModelError, match="differ"):
        check_same_outputs(changed, padded)  # the default probe inputs


def test_save_shrunk_writes_the_checkpoint_and_its_report(
    tokenizer: BertTokenizer, sst2_dir: Path, tmp_path: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _pruned_uniform(tokenizer, task)
    report = {"source": "here", **shrink_model(model)}
    save_shrunk(model, tmp_path / "small", report, tokenizer=tokenizer)
    assert json.loads((tmp_path / "small" / "shrink.json").read_text()) == json.loads(
        json.dumps(report)
    )
    sparsity = json.loads((tmp_path / "small" / "sparsity.json").read_text())
    reported = set(sparsity["tensors"])
    layer_matrices = {
        n
        for n, p in model.named_parameters()
        if n.startswith("bert.encoder.layer.") and p.dim() == 2
    }
    assert layer_matrices <= reported  # every matrix of the layers, nothing outside them
    assert not any(n.startswith(("bert.embeddings", "classifier")) for n in reported)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "small").eval()
    assert check_same_outputs(loaded, model) <= 1e-5
    assert (tmp_path / "small" / "tokenizer_config.json").is_file()


# --- the command line -------------------------------------------------------------------------


def test_the_shrink_command_writes_a_plain_checkpoint(
    tokenizer: BertTokenizer, sst2_dir: Path, tmp_path: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    source = tmp_path / "pruned"
    _pruned_uniform(tokenizer, task).save_pretrained(source)
    tokenizer.save_pretrained(source)
    out = tmp_path / "small"
    args = ["shrink", str(source), "--output-dir", str(out), "--no-progress"]
    result = runner.invoke(app, args, prog_name="obert-train")
    assert result.exit_code == 0, result.output
    assert "intermediate_size 64 -> 32" in result.output
    report = json.loads((out / "shrink.json").read_text())
    assert report["source"] == str(source) and report["max_output_difference"] <= 1e-5
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert loaded.config.intermediate_size == 32
    assert (out / "tokenizer_config.json").is_file()
    again = runner.invoke(app, args, prog_name="obert-train")
    assert again.exit_code == 2 and "not empty" in again.output
    assert runner.invoke(app, [*args, "--overwrite"], prog_name="obert-train").exit_code == 0


def test_the_shrink_command_refuses_different_widths_and_writes_nothing(
    tokenizer: BertTokenizer, sst2_dir: Path, tmp_path: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = _non_uniform(_model(tokenizer), task)
    source = tmp_path / "pruned"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    out = tmp_path / "small"
    args = ["shrink", str(source), "--output-dir", str(out), "--no-progress"]
    result = runner.invoke(app, args, prog_name="obert-train")
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "--pad-to-widest" in result.output
    assert not out.exists()
    padded = runner.invoke(app, [*args, "--pad-to-widest"], prog_name="obert-train")
    assert padded.exit_code == 0, padded.output
    width = json.loads((out / "shrink.json").read_text())["intermediate_size"]["after"]
    assert width == max(_kept_neurons(model)) and not math.isnan(width)


def test_a_model_with_nothing_removed_is_refused(tokenizer: BertTokenizer) -> None:
    with pytest.raises(ModelError, match="nothing to shrink"):
        shrink_model(_model(tokenizer))


def test_transformers_5_bert_cannot_state_fewer_heads_of_the_same_size(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    """Why BERT's heads stay zero-padded: the facts shrink_model relies on, checked.

    The head size is hidden_size / num_attention_heads (fewer heads = bigger heads), and a
    config's ``pruned_heads`` (transformers 4's way) is not applied by ``from_pretrained``.
    """
    model = _model(tokenizer, heads=4)
    fewer = copy.deepcopy(model.config)
    fewer.num_attention_heads = 2
    attention = BertForSequenceClassification(fewer).bert.encoder.layer[0].attention.self
    assert attention.attention_head_size == 16  # not the 8 of the 4-head model
    model.config.pruned_heads = {0: [1]}
    model.save_pretrained(tmp_path / "pruned-heads")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned-heads")
    assert tuple(loaded.bert.encoder.layer[0].attention.self.query.weight.shape) == (32, 32)
    assert not hasattr(loaded, "prune_heads")
