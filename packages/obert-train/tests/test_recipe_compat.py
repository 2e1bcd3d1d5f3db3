"""SparseML/SparseZoo recipes load unchanged (issue 23): version, recipe.md, anchors,
variables with eval(...), --set on variables, the other training modifiers, recipe convert;
and recipe show refuses what run refuses, --set mask_type=2:4 stays "2:4" (issue 18)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BertForSequenceClassification, BertTokenizer
from typer.testing import CliRunner

from obert_train import RecipeError, RunOptions, load_recipe, load_task, parse_sets, run_recipe
from obert_train.cli.app import app
from obert_train.errors import OutputDirError
from obert_train.recipe import convert_recipe
from obert_train.recipe._eval import Expr, evaluate

runner = CliRunner()

SPARSEML = """\
version: 1.1.0

# General variables
num_epochs: &num_epochs 6
init_lr: 1e-4
final_lr: eval(init_lr * 0.1)
prune_start: 1
prune_end: eval(num_epochs - 2)
qkv: &qkv ["re:bert.encoder.layer.*.attention.self.query.weight",
           "re:bert.encoder.layer.*.attention.self.key.weight"]

modifiers:
  - !EpochRangeModifier
    start_epoch: 0.0
    end_epoch: eval(num_epochs)

training_modifiers:
  - !LearningRateFunctionModifier
    start_epoch: 0.0
    end_epoch: eval(prune_start)
    lr_func: linear
    init_lr: eval(init_lr)
    final_lr: eval(final_lr)

pruning_modifiers:
  - !GMPruningModifier &gmp
    params: *qkv
    init_sparsity: 0.5
    final_sparsity: eval(round(0.9 - 0.1, 2))
    start_epoch: eval(prune_start)
    end_epoch: eval(prune_end)
    update_frequency: eval(max(1, (prune_end - prune_start) / 3))
    inter_func: cubic
"""

PLAIN = """\
modifiers:
  - !EpochRangeModifier
    start_epoch: 0.0
    end_epoch: 6
training_modifiers:
  - !LearningRateFunctionModifier
    start_epoch: 0.0
    end_epoch: 1
    lr_func: linear
    init_lr: 1.0e-4
    final_lr: 1.0e-5
pruning_modifiers:
  - !GMPruningModifier
    params: ["re:bert.encoder.layer.*.attention.self.query.weight",
             "re:bert.encoder.layer.*.attention.self.key.weight"]
    init_sparsity: 0.5
    final_sparsity: 0.8
    start_epoch: 1
    end_epoch: 4
    update_frequency: 1
    inter_func: cubic
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- what loads ---------------------------------------------------------------------------


def test_sparseml_recipe_with_version_variables_and_anchors_loads(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, SPARSEML))
    assert recipe == load_recipe(PLAIN)
    assert recipe.version == "1.1.0"
    assert recipe.variables["prune_end"] == 4
    assert recipe.variables["final_lr"] == pytest.approx(1e-5)
    assert recipe.learning_rate[0].final_lr == pytest.approx(1e-5)
    assert "SparseML recipe version: 1.1.0" in recipe.describe()
    assert "prune_end = 4" in recipe.describe()


def test_markdown_recipe_front_matter(tmp_path: Path) -> None:
    card = f"\n---\n{SPARSEML}---\n\n# MiniLM pruned\n\nProse, with a rule:\n\n---\n\nmore.\n"
    md = write(tmp_path, card, "recipe.md")
    assert load_recipe(md) == load_recipe(PLAIN)
    assert load_recipe(card) == load_recipe(PLAIN)  # text with front matter, as SparseML read it
    bad = write(tmp_path, card.replace("eval(num_epochs - 2)", "eval(num_epoch - 2)"), "bad.md")
    with pytest.raises(RecipeError, match=r"bad\.md, line 10: 'eval\(num_epoch - 2\)'"):
        load_recipe(bad)  # the line of the .md file


def test_merge_keys_and_aliases_of_modifiers() -> None:
    text = PLAIN.replace(
        "  - !GMPruningModifier\n", "  - !GMPruningModifier\n    <<: {init_sparsity: 0.1}\n"
    )
    assert load_recipe(text).pruning[0].init_sparsity == 0.5  # the key written next to it wins


def test_set_overrides_a_variable_before_evaluation(tmp_path: Path) -> None:
    path = write(tmp_path, SPARSEML)
    recipe = load_recipe(path, parse_sets(["num_epochs=10", "init_lr=2e-4"]))
    assert recipe.num_epochs == 10
    assert recipe.pruning[0].end_epoch == 8  # eval(num_epochs - 2) with the new value
    assert recipe.learning_rate[0].final_lr == pytest.approx(2e-5)
    again = load_recipe(path, {"prune_end": "eval(num_epochs - 3)"})
    assert again.pruning[0].end_epoch == 3
    field = load_recipe(path, {"GMPruningModifier.end_epoch": "eval(num_epochs - 4)"})
    assert field.pruning[0].end_epoch == 2  # a field override may use the variables too
    nm = SPARSEML.replace("qkv: &qkv", 'mask: "2:4"\nqkv: &qkv').replace(
        "final_sparsity: eval(round(0.9 - 0.1, 2))", "final_sparsity: 0.5"
    )
    for sets in (["mask_type=eval(mask)"], []):
        text_field = load_recipe(nm, {"mask_type": "eval(mask)"} if not sets else parse_sets(sets))
        assert text_field.pruning[0].settings.mask_type == "2:4"


def test_evaluator_grammar() -> None:
    env = {"a": 6, "b": 0.5}
    cases = {
        "eval(a - 1)": 5,
        "eval(-a + 2 ** 3)": 2,
        "eval((a + 2) * b)": 4.0,
        "eval(a // 4 + a % 4)": 3,
        "eval(min(a, 3) + max(1, b) + abs(-1) + int(2.7) + float(1) + round(b * 3))": 10.0,
    }
    for text, value in cases.items():
        assert evaluate(Expr(text, 1), env, "r.yaml") == value, text


# --- issue 18: --set mask_type=2:4; recipe show validates as run does ----------------------


def test_set_mask_type_2_4_stays_text() -> None:
    assert parse_sets(["mask_type=2:4", "damp=1e-7", "num_grads=8"]) == {
        "mask_type": "2:4",
        "damp": 1e-7,
        "num_grads": 8,
    }
    overrides = {"mask_type": "2:4", "init_sparsity": "0.5", "final_sparsity": "0.5"}
    recipe = load_recipe(PLAIN, overrides)
    assert recipe.pruning[0].settings.mask_type == "2:4"
    result = runner.invoke(
        app, ["recipe", "show", PLAIN, *(f"--set={k}={v}" for k, v in overrides.items())]
    )
    assert result.exit_code == 0, result.output
    assert "2:4" in result.output


STRUCTURED = """\
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
    grad_sampler_kwargs: {batch_size: 4}
"""


@pytest.mark.parametrize(
    ("text", "sets", "part"),
    [
        (PLAIN, ["mask_type=2:4"], "mask_type '2:4' keeps 2 of every 4 weights"),
        (STRUCTURED, ["mask_type=block4"], "mask_type 'block4' does not apply"),
    ],
    ids=["2:4 from 0.5 to 0.8", "structured block4"],
)
def test_recipe_show_refuses_what_run_refuses(
    text: str,
    sets: list[str],
    part: str,
    tmp_path: Path,
    tiny_model_dir: Path,
    sst2_dir: Path,
) -> None:
    path = write(tmp_path, text)
    flags = [f"--set={s}" for s in sets]
    show = runner.invoke(app, ["recipe", "show", str(path), *flags])
    out = tmp_path / "run"
    run = runner.invoke(
        app,
        [
            "run", str(path), *flags, "--model", str(tiny_model_dir), "--task", "sst2",
            "--data-dir", str(sst2_dir), "--output-dir", str(out), "--no-progress",
        ],
    )  # fmt: skip
    assert show.exit_code == run.exit_code == 2, (show.output, run.output)
    error = [line for line in show.output.splitlines() if line.startswith("error:")]
    assert error and part in error[0] and str(path) in error[0]
    assert error[0] in run.output
    assert not out.exists()


# --- the other SparseML modifiers ----------------------------------------------------------


def test_set_learning_rate_is_a_constant_phase_until_the_next() -> None:
    text = PLAIN.replace(
        "training_modifiers:\n",
        "training_modifiers:\n  - !SetLearningRateModifier\n    learning_rate: 3.0e-5\n"
        "    start_epoch: 4\n",
    ).replace("start_epoch: 0.0\n    end_epoch: 1\n", "start_epoch: 0.5\n    end_epoch: 1\n")
    text += "  - !SetLearningRateModifier\n    learning_rate: 2.0e-5\n    start_epoch: -1\n"
    recipe = load_recipe(text)
    phases = [(m.start_epoch, m.end_epoch, m.init_lr, m.final_lr) for m in recipe.learning_rate]
    assert sorted(phases) == [(0.0, 0.5, 2e-5, 2e-5), (0.5, 1, 1e-4, 1e-5), (4, 6, 3e-5, 3e-5)]
    assert recipe.lr_at(45, 10) == pytest.approx(3e-5)
    assert "epochs 4-6: constant 3e-05" in recipe.describe()
    assert load_recipe(recipe.to_yaml()) == recipe


WD_FREEZE = PLAIN.replace(
    "training_modifiers:\n",
    "training_modifiers:\n  - !SetWeightDecayModifier\n    weight_decay: 0.01\n"
    "    start_epoch: 0\n  - !TrainableParamsModifier\n"
    "    params: ['re:bert.embeddings.*']\n    trainable: false\n",
)


def test_weight_decay_and_trainable_params_are_read_and_described() -> None:
    recipe = load_recipe(WD_FREEZE)
    assert recipe.weight_decay == 0.01
    (frozen,) = recipe.trainable
    assert not frozen.trainable
    text = recipe.describe()
    assert "Weight decay: 0.01 for the whole run" in text
    assert "frozen (requires_grad false) for the whole run" in text
    assert load_recipe(recipe.to_yaml()) == recipe
    assert recipe.fingerprint() != load_recipe(PLAIN).fingerprint()


def test_frozen_pruned_tensor_is_refused(tiny_bert: BertForSequenceClassification) -> None:
    recipe = load_recipe(WD_FREEZE.replace("re:bert.embeddings.*", "re:.*query.weight"))
    with pytest.raises(RecipeError, match="must stay trainable"):
        recipe.apply_trainable(tiny_bert)
    assert all(p.requires_grad for p in tiny_bert.parameters())  # nothing changed


def test_run_applies_weight_decay_and_frozen_params(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import obert_train.hf.run as hf_run

    seen: list[float] = []
    real = hf_run.TrainingArguments

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["weight_decay"])
        return real(*args, **kwargs)

    monkeypatch.setattr(hf_run, "TrainingArguments", spy)
    recipe = load_recipe(WD_FREEZE.replace("end_epoch: 6", "end_epoch: 5"))
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    before = {n: p.detach().clone() for n, p in tiny_bert.named_parameters()}
    run_recipe(
        recipe, tiny_bert, task, tmp_path / "run", model_name="tiny",
        options=RunOptions(batch_size=8, progress=False, evaluate=False, save_checkpoints=False),
        log=lambda _line: None,
    )  # fmt: skip
    for name, p in tiny_bert.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed != name.startswith("bert.embeddings"), name
    assert seen == [0.01]  # the recipe's weight decay, not RunOptions' 0.0


def test_a_refused_run_leaves_requires_grad_as_it_was(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
) -> None:
    """Review: the recipe froze the caller's parameters before a check refused the run."""
    from obert_train import ObertTrainError

    kd = "distillation_modifiers:\n  - !DistillationModifier {hardness: 0.5, temperature: 2.0}\n"
    recipe = load_recipe(WD_FREEZE + kd)
    assert recipe.trainable and recipe.distillation is not None
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    tiny_bert.classifier.weight.requires_grad_(False)  # the caller's own choice stays too
    before = {n: p.requires_grad for n, p in tiny_bert.named_parameters()}
    with pytest.raises(ObertTrainError, match="no teacher was given"):
        run_recipe(
            recipe, tiny_bert, task, tmp_path / "run", model_name="tiny",
            options=RunOptions(batch_size=8, progress=False, evaluate=False),
            log=lambda _line: None,
        )  # fmt: skip
    assert {n: p.requires_grad for n, p in tiny_bert.named_parameters()} == before
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("tag", "part"),
    [
        ("QuantizationModifier", "`obert-deploy qat CHECKPOINT -o model.onnx`"),
        ("LayerPruningModifier", "`obert-train drop-layers MODEL --output-dir SMALLER --keep"),
    ],
)
def test_modifiers_of_another_command_are_refused_with_it(
    tag: str, part: str, tmp_path: Path
) -> None:
    path = write(tmp_path, PLAIN + f"  - !{tag}\n    start_epoch: 0\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert f"modifier 4 (!{tag}, line 22) in {path}" in str(info.value)
    assert part in str(info.value)


# --- recipe convert ------------------------------------------------------------------------


def test_convert_writes_a_plain_recipe(tmp_path: Path) -> None:
    src = write(tmp_path, f"---\n{SPARSEML}---\nprose\n", "recipe.md")
    out = tmp_path / "plain.yaml"
    result = runner.invoke(
        app, ["recipe", "convert", str(src), "-o", str(out), "--set", "num_epochs=8"]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "eval(" not in text and "version 1.1.0" in text
    assert load_recipe(out) == load_recipe(src, {"num_epochs": 8})
    again = runner.invoke(app, ["recipe", "convert", str(src), "-o", str(out)])
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.output
    assert load_recipe(out).num_epochs == 8  # untouched
    assert (
        runner.invoke(app, ["recipe", "convert", str(src), "-o", str(out), "--overwrite"]).exit_code
        == 0
    )
    assert load_recipe(out).num_epochs == 6
    same = write(tmp_path, SPARSEML, "same.yaml")
    with pytest.raises(OutputDirError, match="is the recipe being converted"):
        convert_recipe(same, same, overwrite=True)
    assert same.read_text() == SPARSEML


# --- bad input: a clear error naming it, its file and line; nothing is run ------------------


BAD: list[tuple[str, str, str, list[str]]] = [
    (
        "unknown variable",
        "recipe.yaml",
        SPARSEML.replace("eval(num_epochs - 2)", "eval(num_epoch - 2)"),
        ["line 8", "'eval(num_epoch - 2)'", "unknown variable 'num_epoch'"],
    ),
    (
        "division by zero",
        "recipe.yaml",
        SPARSEML.replace("eval(init_lr * 0.1)", "eval(init_lr / (prune_start - 1))")
        .replace("prune_start: 1\n", "")
        .replace("init_lr: 1e-4\n", "init_lr: 1e-4\nprune_start: 1\n"),
        ["line 7", "'eval(init_lr / (prune_start - 1))'", "divides by zero"],
    ),
    (
        "a Python call",
        "recipe.yaml",
        SPARSEML.replace("eval(num_epochs - 2)", "eval(__import__('os').getpid())"),
        ["line 8", "__import__", "only ['abs', 'float', 'int', 'max', 'min', 'round']"],
    ),
    (
        "attribute access",
        "recipe.yaml",
        SPARSEML.replace("eval(num_epochs - 2)", "eval(num_epochs.real)"),
        ["line 8", "'eval(num_epochs.real)'", "attribute 'num_epochs.real'"],
    ),
    (
        "a variable used before it is defined",
        "recipe.yaml",
        SPARSEML.replace("final_lr: eval(init_lr * 0.1)", "final_lr: eval(prune_start * 0.1)"),
        ["line 6", "uses 'prune_start', defined later (line 7)"],
    ),
    (
        "recipe.md without front matter",
        "recipe.md",
        "# A recipe card\n\n" + SPARSEML,
        ["must start with YAML front matter", "line 1 is '# A recipe card'"],
    ),
    (
        "two front-matter blocks",
        "recipe.md",
        f"---\n{SPARSEML}---\n\n---\nmore: 1\n---\ntext\n",
        ["two front-matter blocks (lines 1-", "merge them"],
    ),
    (
        "a variable shadowing a modifier field",
        "recipe.yaml",
        "inter_func: linear\n" + SPARSEML,
        [
            "line 1",
            "shadows the field 'inter_func' of modifier 3 (!GMPruningModifier",
            "!GMPruningModifier",
        ],
    ),
    (
        "num_epochs not used by the run length",
        "recipe.yaml",
        SPARSEML.replace("end_epoch: eval(num_epochs)", "end_epoch: 5"),
        ["line 4", "variable 'num_epochs' = 6 shadows the field 'end_epoch'", "eval(num_epochs)"],
    ),
    (
        "a modifier SparseML never had",
        "recipe.yaml",
        SPARSEML + "  - !MagicPruningModifier\n    start_epoch: 0\n",
        ["modifier 4 (!MagicPruningModifier, line 34)", "unknown modifier tag"],
    ),
    (
        "a staged recipe",
        "recipe.yaml",
        "stage_0:\n  modifiers:\n    - !EpochRangeModifier {end_epoch: 1}\n",
        ["line 1", "staged recipes are not supported"],
    ),
    (
        "a huge power",
        "recipe.yaml",
        SPARSEML.replace("eval(num_epochs - 2)", "eval(10 ** 10 ** 10)"),
        ["line 8", "exponent", "too large"],
    ),
    (  # review: a ValueError traceback (the int str digit limit)
        "a power too large to print",
        "recipe.yaml",
        SPARSEML.replace("eval(num_epochs - 2)", "eval((9**1024)**1024)"),
        ["line 8", "'eval((9**1024)**1024)'", "larger than 2**1024"],
    ),
    (  # review: never finished
        "a power too large to compute",
        "recipe.yaml",
        SPARSEML.replace("eval(num_epochs - 2)", "eval(((9**1024)**1024)**1024)"),
        ["line 8", "'eval(((9**1024)**1024)**1024)'", "larger than 2**1024"],
    ),
    (
        "a product too large",
        "recipe.yaml",
        SPARSEML.replace("eval(num_epochs - 2)", "eval((2**1000) * (2**1000))"),
        ["line 8", "larger than 2**1024"],
    ),
    (
        "an infinite float",
        "recipe.yaml",
        SPARSEML.replace("eval(num_epochs - 2)", "eval(1e308 * 10 - 1e308 * 10)"),
        ["line 8", "inf, not a finite number"],
    ),
]


@pytest.mark.parametrize(("case", "name", "text", "parts"), BAD, ids=[c[0] for c in BAD])
def test_bad_sparseml_recipe_is_refused(
    case: str, name: str, text: str, parts: list[str], tmp_path: Path
) -> None:
    path = write(tmp_path, text, name)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message, message
    for part in parts:
        assert part in message, (part, message)
    result = runner.invoke(app, ["recipe", "show", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and parts[-1] in result.output


def test_bad_override_of_a_variable_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, SPARSEML)
    with pytest.raises(RecipeError, match=r"'eval\(nope \+ 1\)' \(variable 'num_epochs' \(set by"):
        load_recipe(path, {"num_epochs": "eval(nope + 1)"})


def test_bad_override_of_a_field_names_no_line_of_the_file(tmp_path: Path) -> None:
    """Review: a field override's failing eval() was reported at "<file>, line 1"."""
    path = write(tmp_path, SPARSEML)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, {"final_sparsity": "eval(nope + 1)"})
    message = str(info.value)
    assert message.startswith(f"{path}: 'eval(nope + 1)' (field 'final_sparsity'"), message
    assert "unknown variable 'nope'" in message


ZOO_CARD = """\
<!--
Copyright and license header, as the SparseML recipe cards have.
-->

---
# General Variables
num_epochs: &num_epochs 6
init_lr: &init_lr 0.00005

# Pruning Hyperparameters
init_sparsity: &init_sparsity 0.00
final_sparsity: &final_sparsity 0.9
update_frequency: &pruning_update_frequency 0.5

training_modifiers:
  - !EpochRangeModifier
    end_epoch: *num_epochs
    start_epoch: 0.0

  - !LearningRateFunctionModifier
    start_epoch: 0.0
    end_epoch: *num_epochs
    lr_func: linear
    init_lr: *init_lr
    final_lr: 0.0

pruning_modifiers:
  - !GMPruningModifier
    params:
      - re:bert.encoder.layer.*.attention.self.query.weight
    start_epoch: 1
    end_epoch: 4
    init_sparsity: *init_sparsity
    final_sparsity: *final_sparsity
    inter_func: cubic
    update_frequency: *pruning_update_frequency
    leave_enabled: True
    mask_type: [1,4]
    log_types: __ALL__
---

# A BERT recipe card

Prose.
"""


def test_sparsezoo_card_with_aliased_variables(tmp_path: Path) -> None:
    """A SparseML recipe card: license comment first, fields written as aliases of variables
    of the same name; an override of such a variable sets the field too (recipe_args)."""
    card = write(tmp_path, ZOO_CARD, "recipe.md")
    recipe = load_recipe(card)
    (gmp,) = recipe.pruning
    assert (gmp.init_sparsity, gmp.final_sparsity, gmp.update_frequency) == (0.0, 0.9, 0.5)
    assert gmp.settings.mask_type == "block4"  # SparseML's [1, 4]
    assert "log_types not used (logging is the trainer's" in recipe.describe()  # said, not silent
    changed = load_recipe(card, parse_sets(["final_sparsity=0.8", "num_epochs=8", "init_lr=1e-4"]))
    assert changed.pruning[0].final_sparsity == 0.8
    assert changed.num_epochs == 8 and changed.learning_rate[0].end_epoch == 8
    assert changed.learning_rate[0].init_lr == 1e-4
    quant = ZOO_CARD.replace(
        "pruning_modifiers:", "quantization_modifiers:\n  - !QuantizationModifier\n"
        "    start_epoch: 5\n\npruning_modifiers:"
    )  # fmt: skip
    with pytest.raises(RecipeError, match="obert-deploy qat"):
        load_recipe(write(tmp_path, quant, "quant.md"))


@st.composite
def _arithmetic(draw: st.DrawFn, depth: int = 3) -> str:
    if depth == 0 or draw(st.booleans()):
        leaf = draw(st.one_of(st.integers(0, 50).map(str), st.sampled_from(["a", "b", "c"])))
        return str(leaf)
    op = draw(st.sampled_from(["+", "-", "*", "/", "//", "%"]))
    left, right = draw(_arithmetic(depth - 1)), draw(_arithmetic(depth - 1))
    return f"({left} {op} {right})" if draw(st.booleans()) else f"-({left}) {op} {right}"


@settings(max_examples=200, deadline=None)
@given(_arithmetic())
def test_evaluator_agrees_with_python_arithmetic(text: str) -> None:
    """The safe evaluator gives Python's value for the arithmetic it allows (or refuses the
    division by zero Python raises)."""
    env = {"a": 6, "b": 0.5, "c": 3}
    try:
        expected = eval(text, {"__builtins__": {}}, dict(env))  # the test's reference only
    except ZeroDivisionError:
        with pytest.raises(RecipeError, match="divides by zero"):
            evaluate(Expr(f"eval({text})", 1), env, "r.yaml")
        return
    assert evaluate(Expr(f"eval({text})", 1), env, "r.yaml") == pytest.approx(expected)
