"""The structured stage (issue 21): FFN neurons and heads removed, faster on any CPU.

Planned by default and not with ``--no-structured`` (the other stages' keys unchanged either
way); its shrunk checkpoint loads with plain ``from_pretrained`` and computes the trained
model's outputs; the report's row, speed-up line and commands; on the tiny BERT of conftest.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertTokenizer
from typer.testing import CliRunner

from obert.cli import app
from obert.config import QuickstartConfig
from obert.pipeline import plan_stages
from obert.preflight import prepare
from obert.report import speedup_summary, summary_table
from obert.training import SHRUNK_DIR, shrink_stage
from obert_train import DataOptions, load_task

from .conftest import quick_args, tiny_model

runner = CliRunner()


def _config(
    model_dir: Path, data_dir: Path, recipes: dict[str, Path], out: Path, **changes: Any
) -> QuickstartConfig:
    config = QuickstartConfig(
        model=str(model_dir),
        data=DataOptions(data_dir=data_dir, max_seq_length=32),
        recipe=str(recipes["pruning"]),
        dense_recipe=str(recipes["dense"]),
        batch_size=16,
        output_dir=out,
        progress=False,
    )
    return replace(config, **changes)


def test_the_structured_stage_is_planned_by_default_and_leaves_the_other_keys_alone(
    tmp_path: Path, model_dir: Path, data_dir: Path, recipes: dict[str, Path]
) -> None:
    plans = {}
    for structured in (True, False):
        config = _config(model_dir, data_dir, recipes, tmp_path / "out", structured=structured)
        prepared = prepare(config, lambda line: None)
        plans[structured] = {spec.name: spec.key for spec in plan_stages(config, prepared, {})}
    on, off = plans[True], plans[False]
    ours = ["structured", "export-structured", "int8-structured", "eval-structured"]
    assert all(name in on for name in ours) and not any(name in off for name in ours)
    assert list(on).index("structured") == list(on).index("gmp") + 1  # after the pruning stages
    for name, key in off.items():
        if name not in ("bench", "size"):  # these two measure every model, the new one too
            assert on[name] == key, name


def test_structured_recipe_with_no_structured_is_refused() -> None:
    from obert.errors import PipelineInputError

    with pytest.raises(PipelineInputError, match=r"--structured-recipe 'mine\.yaml' with --no-s"):
        QuickstartConfig(structured=False, structured_recipe="mine.yaml")


def _uniformly_pruned(folder: Path, model_dir: Path, heads: bool = True) -> torch.nn.Module:
    """The tiny BERT with 48 of 64 FFN neurons (the same count per layer) zeroed, and head 1."""
    model = tiny_model(len(BertTokenizer(str(model_dir / "vocab.txt"))))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            gone = torch.randperm(64, generator=gen)[:48]
            layer.intermediate.dense.weight[gone] = 0
            layer.intermediate.dense.bias[gone] = 0
            layer.output.dense.weight[:, gone] = 0
            attention = layer.attention
            if not heads:
                continue
            for proj in (attention.self.query, attention.self.key, attention.self.value):
                proj.weight[16:] = 0
                proj.bias[16:] = 0
            attention.output.dense.weight[:, 16:] = 0
    model.save_pretrained(folder / "model")
    return model.eval()


def test_shrink_stage_writes_a_checkpoint_plain_transformers_loads_with_the_same_outputs(
    tmp_path: Path, model_dir: Path, data_dir: Path
) -> None:
    tokenizer = BertTokenizer(str(model_dir / "vocab.txt"))
    task = load_task("sst2", tokenizer, DataOptions(data_dir=data_dir, max_seq_length=32))
    trained = _uniformly_pruned(tmp_path, model_dir)
    out = shrink_stage(
        tmp_path, task=task, deploy_task="sequence-classification", tokenizer=tokenizer, seed=0
    )
    assert out["shrunk_model"] == SHRUNK_DIR
    shrink = out["shrink"]
    assert shrink["intermediate_size"] == {"before": 64, "after": 16}
    assert shrink["neurons_removed"] == 0.75 and shrink["heads_removed"] == 0.5
    assert shrink["kept_heads"] == [1, 1] and shrink["heads"] != "removed"  # BERT: zeros stay
    assert shrink["parameters"]["after"] < shrink["parameters"]["before"]
    assert shrink["loads_with"] == "transformers.AutoModelForSequenceClassification"
    folder = tmp_path / SHRUNK_DIR
    assert json.loads((folder / "shrink.json").read_text())["intermediate_size"]["after"] == 16
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert loaded.config.intermediate_size == 16
    assert sum(p.numel() for p in loaded.parameters()) == shrink["parameters"]["after"]
    batch = BertTokenizer.from_pretrained(folder)(
        ["a b c", "the film"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**batch).logits, trained(**batch).logits, rtol=0, atol=1e-5
        )


def test_a_model_without_removed_neurons_gives_no_shrunk_checkpoint_and_says_why(
    tmp_path: Path, model_dir: Path, data_dir: Path
) -> None:
    tokenizer = BertTokenizer(str(model_dir / "vocab.txt"))
    task = load_task("sst2", tokenizer, DataOptions(data_dir=data_dir, max_seq_length=32))
    tiny_model(len(tokenizer)).save_pretrained(tmp_path / "model")
    out = shrink_stage(
        tmp_path, task=task, deploy_task="sequence-classification", tokenizer=tokenizer, seed=0
    )
    assert "shrunk_model" not in out and "nothing to shrink" in out["shrink"]["error"]
    assert not (tmp_path / SHRUNK_DIR).exists()


def _latency(name: str, p50: float, batch: int, engine: str = "onnxruntime") -> dict[str, Any]:
    return {"name": name, "engine": engine, "batch_size": batch, "latency_ms": {"p50": p50}}


def test_speedup_line_names_the_best_model_and_deepsparse_when_it_ran() -> None:
    rows = [_latency("dense", 10.0, 1), _latency("dense", 80.0, 16),
            _latency("obert", 10.0, 1), _latency("obert-int8", 5.0, 1),
            _latency("structured", 4.0, 1), _latency("structured", 20.0, 16)]  # fmt: skip
    models = {
        "dense": {"pytorch": {}},
        "obert": {"pytorch": {}},
        "structured": {"kind": "structured", "sparsity": 0.6,
                       "structure": {"neurons": 0.75, "heads": 0.5}, "pytorch": {}},
    }  # fmt: skip
    report = {"latency": rows, "models": models, "metric": "accuracy", "size": {}}
    line = speedup_summary(report)
    assert "best on ONNX Runtime 4.00x (structured, batch 16)" in line
    assert "structured model (75.0 % of FFN neurons and 50.0 % of heads removed)" in line
    assert "2.50x at batch 1, 4.00x at batch 16" in line and "DeepSparse did not run" in line
    report["latency"] = [*rows, _latency("dense", 8.0, 1, "deepsparse"),
                         _latency("obert", 2.0, 1, "deepsparse")]  # fmt: skip
    line = speedup_summary(report)
    assert "On DeepSparse: obert 5.00x (batch 1) over dense fp32 on ONNX Runtime, 4.00x over " in (
        line
    )
    table = summary_table(report)
    assert "speed-up b1 (ORT)" in table and "speed-up b16 (ORT)" in table
    assert "| structured | 75.0 of FFN neurons" in table and "| 2.50x | 4.00x |" in table


@pytest.mark.slow  # four training stages, eight ONNX files on the tiny BERT: 13 s on 2 cores
def test_quickstart_reports_the_structured_model_and_its_shrunk_checkpoint(
    tmp_path: Path, model_dir: Path, data_dir: Path, recipes: dict[str, Path]
) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, [*quick_args(model_dir, data_dir, recipes, out), "--baseline",
                                 "none", "--bench-batch-size", "4"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Speed-up: best on ONNX Runtime" in result.output
    report = json.loads((out / "report.json").read_text())
    entry = report["models"]["structured"]
    # The shipped recipe on FFN 64 / 2 heads: 16 neurons (multiple 16) and 1 head per layer.
    assert entry["structure"] == {"neurons": 0.75, "heads": 0.5}
    assert entry["export"]["zeros_kept"] and "onnx_eval" in entry
    names = {(row["name"], row["batch_size"]) for row in report["latency"]}
    assert {("structured", 1), ("structured", 4), ("structured-int8", 4)} <= names
    assert {"structured", "structured-int8"} <= set(report["size"])
    shrunk = Path(entry["shrunk"]["checkpoint"])
    assert shrunk == out / "stages" / "structured" / "shrunk"
    loaded = AutoModelForSequenceClassification.from_pretrained(shrunk).eval()
    trained = AutoModelForSequenceClassification.from_pretrained(shrunk.parent / "model").eval()
    assert loaded.config.intermediate_size == 16 and trained.config.intermediate_size == 64
    batch = BertTokenizer.from_pretrained(shrunk)(
        ["a b", "the film is good"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**batch).logits, trained(**batch).logits, rtol=0, atol=1e-5
        )
    text = (out / "report.md").read_text()
    for needle in (
        f"`{shrunk}` (intermediate_size 64 -> 16",
        "AutoModelForSequenceClassification.from_pretrained(path)",
        "| structured | 75.0 of FFN neurons, 50.0 of heads",
        "obert-train shrink STRUCTURED --output-dir STRUCTURED-SHRUNK",
        "obert-deploy export STRUCTURED -o structured.onnx",
        "obert-deploy quantize structured.onnx -o structured-int8.onnx",
        "obert-deploy evaluate STRUCTURED structured.onnx structured-int8.onnx",
        "structured (whole neurons, heads)",
    ):
        assert needle in text, needle
    run = [line for line in report["stage_commands"] if "--output-dir STRUCTURED" in line]
    assert run[0].startswith("obert-train run ") and "structured/model/recipe.yaml" in run[0]


def test_a_structured_recipe_keeps_its_stage_name_and_key_next_to_the_structured_stage(
    tmp_path: Path, model_dir: Path, data_dir: Path, recipes: dict[str, Path]
) -> None:
    plans, labels = {}, {}
    for structured in (True, False):
        config = _config(model_dir, data_dir, recipes, tmp_path / "out", structured=structured,
                         recipe="quickstart-structured")  # fmt: skip
        prepared = prepare(config, lambda line: None)
        labels[structured] = (prepared.pruned_label, prepared.structured_label)
        plans[structured] = {spec.name: spec.key for spec in plan_stages(config, prepared, {})}
    assert labels[True] == labels[False] == ("structured", "structured-stage")
    on, off = plans[True], plans[False]
    assert {"structured-stage", "export-structured-stage"} <= set(on)
    assert not any(name.endswith("structured-stage") for name in off)
    for name, key in off.items():  # --recipe's stage "structured" and the others as they were
        if name not in ("bench", "size"):
            assert on[name] == key, name


@pytest.mark.slow  # two or three training stages on the tiny BERT: 8 s and 15 s on 2 cores
@pytest.mark.parametrize("structured", [False, True])
def test_a_structured_pruning_recipe_is_reported_as_the_pruned_model(
    tmp_path: Path, model_dir: Path, data_dir: Path, recipes: dict[str, Path], structured: bool
) -> None:
    out = tmp_path / "out"
    args = quick_args(model_dir, data_dir, recipes, out)
    args[args.index("--recipe") + 1] = "quickstart-structured"  # its label: "structured"
    flag = "--structured" if structured else "--no-structured"
    result = runner.invoke(app, [*args, flag, "--baseline", "none"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    ours = {"structured-stage"} if structured else set()
    assert set(report["models"]) == {"dense", "structured", *ours}
    entry = report["models"]["structured"]  # --recipe's stage: no shrunk checkpoint
    assert "kind" not in entry and "shrunk" not in entry
    text = (out / "report.md").read_text()
    commands = report["stage_commands"]
    assert sum(line.endswith("--output-dir STRUCTURED") for line in commands) == 1
    line = speedup_summary(report)
    if structured:
        assert report["models"]["structured-stage"]["kind"] == "structured"
        assert "The structured model structured-stage (75.0 % of FFN neurons" in line
        assert "`" + str(out / "stages" / "structured-stage" / "shrunk") + "`" in text
        assert "obert-train shrink STRUCTURED-STAGE --output-dir STRUCTURED-STAGE-SHRUNK" in (
            "\n".join(commands)
        )
        assert "structured-stage" in report["recipes"]
    else:
        assert "physically smaller checkpoint" not in text and "The structured model" not in text
        assert "obert-train shrink" not in "\n".join(commands)
        assert "The structured model" not in line


def test_the_shrunk_checkpoint_line_says_what_happened_to_the_heads() -> None:
    from obert.report import _shrunk_lines

    shrunk = {"checkpoint": "out/stages/structured/shrunk", "intermediate_size": {"before": 64,
              "after": 16}, "parameters": {"before": 900, "after": 500},
              "loads_with": "transformers.AutoModelForSequenceClassification",
              "max_output_difference": 1e-7}  # fmt: skip
    entry: dict[str, Any] = {"kind": "structured", "shrunk": shrunk}
    report = {"models": {"structured": entry}}
    cases = {
        "removed": "num_attention_heads 4 -> 2;",
        "every head is kept": "num_attention_heads 4, no head removed;",
        "BertConfig has no head_dim: ...": "its removed heads stay as zeros in PyTorch",
    }
    for heads, expected in cases.items():
        after = 2 if heads == "removed" else 4
        shrunk.update(heads=heads, num_attention_heads={"before": 4, "after": after})
        assert expected in _shrunk_lines(report)[1], heads
    del entry["kind"]  # --recipe's model called "structured" (--no-structured): no such line
    assert _shrunk_lines(report) == []


def test_a_model_with_every_head_kept_is_reported_so(
    tmp_path: Path, model_dir: Path, data_dir: Path
) -> None:
    from obert.report import _EVERY_HEAD_KEPT

    tokenizer = BertTokenizer(str(model_dir / "vocab.txt"))
    task = load_task("sst2", tokenizer, DataOptions(data_dir=data_dir, max_seq_length=32))
    _uniformly_pruned(tmp_path, model_dir, heads=False)
    out = shrink_stage(
        tmp_path, task=task, deploy_task="sequence-classification", tokenizer=tokenizer, seed=0
    )
    shrink = out["shrink"]  # obert-train's words, which the report's line tells apart
    assert shrink["heads"] == _EVERY_HEAD_KEPT and shrink["heads_removed"] == 0.0
    assert shrink["neurons_removed"] == 0.75


def test_a_shrunk_checkpoint_that_computes_something_else_fails_the_stage(
    tmp_path: Path, model_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from obert.errors import StageError

    tokenizer = BertTokenizer(str(model_dir / "vocab.txt"))
    task = load_task("sst2", tokenizer, DataOptions(data_dir=data_dir, max_seq_length=32))
    _uniformly_pruned(tmp_path, model_dir)
    # obert-train's one bound on the output difference: any difference, even 0, is too big
    monkeypatch.setattr("obert_train.shrink._TOLERANCE", -1.0)
    with pytest.raises(StageError, match=r"loaded with transformers\.AutoModelForSequenceClass"
                       r"ification: the shrunk model's outputs differ"):  # fmt: skip
        shrink_stage(
            tmp_path, task=task, deploy_task="sequence-classification", tokenizer=tokenizer, seed=0
        )


def test_the_report_says_why_there_is_no_shrunk_checkpoint() -> None:
    from obert.report import _shrunk_lines, _sparsity

    entry = {"kind": "structured", "sparsity": 0.4, "shrunk": {"error": "nothing to shrink"}}
    report = {"models": {"structured": entry}}
    assert _shrunk_lines(report) == [
        "",
        "No smaller checkpoint of the structured model: nothing to shrink",
    ]
    assert _sparsity(entry) == "40.0"  # no fractions of neurons and heads: the weights'


def test_speedup_line_without_a_dense_ort_latency_or_a_dense_deepsparse_one() -> None:
    models = {"dense": {"pytorch": {}}, "obert": {"pytorch": {}}}
    report: dict[str, Any] = {"latency": [_latency("obert", 5.0, 1)], "models": models}
    assert speedup_summary(report) == (
        "Speed-up: no ONNX Runtime latency of the dense model to compare with."
    )
    report["latency"] = [_latency("dense", 10.0, 1), _latency("obert", 8.0, 1),
                         _latency("obert", 2.0, 1, "deepsparse")]  # fmt: skip
    line = speedup_summary(report)
    assert "best on ONNX Runtime 1.25x (obert, batch 1)" in line
    assert line.endswith("On DeepSparse: obert 5.00x (batch 1) over dense fp32 on ONNX Runtime.")
    assert "structured" not in line  # no structured stage, no line about it


def test_overrides_change_the_pruning_recipe_not_the_structured_one(
    tmp_path: Path, model_dir: Path, data_dir: Path, recipes: dict[str, Path]
) -> None:
    overrides = {"final_sparsity": 0.95}  # --final-sparsity 0.95 (as the docs and --help say)
    config = _config(model_dir, data_dir, recipes, tmp_path / "out", overrides=overrides)
    prepared = prepare(config, lambda line: None)
    assert [m.final_sparsity for m in prepared.pruning_recipe.pruning] == [0.95]
    structured = prepared.structured_recipe
    assert [m.final_sparsity for m in structured.pruning] == [0.75, 0.5]
