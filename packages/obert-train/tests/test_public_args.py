"""Public functions check their arguments like the command lines check options (issue 18).

A wrong type is an :class:`~obert_train.ArgumentError` (a ``TypeError``) naming the function,
the argument and the value, raised before any work; never a comparison ``TypeError`` or an
``AttributeError`` from deep inside.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import BertForSequenceClassification, BertTokenizer

import obert_train as ot

Call = Callable[[BertForSequenceClassification, BertTokenizer, Path], Any]

CASES: list[tuple[str, Call, str]] = [
    ("load_recipe source int", lambda m, t, d: ot.load_recipe(42), "source=42"),
    (
        "load_recipe overrides list",
        lambda m, t, d: ot.load_recipe("minilm-sst2-obert80", [("final_sparsity", 0.9)]),  # type: ignore[arg-type]
        "overrides=[",
    ),
    (
        "oneshot_prune sparsity str",
        lambda m, t, d: ot.oneshot_prune(m, "magnitude", "0.5"),  # type: ignore[arg-type]
        "sparsity='0.5'",
    ),
    ("oneshot_prune method int", lambda m, t, d: ot.oneshot_prune(m, 3, 0.5), "method=3"),  # type: ignore[arg-type]
    (
        "oneshot_prune settings list",
        lambda m, t, d: ot.oneshot_prune(m, "magnitude", 0.5, settings=[1]),  # type: ignore[arg-type]
        "settings=[1]",
    ),
    ("load_task task int", lambda m, t, d: ot.load_task(3, t), "task=3"),  # type: ignore[arg-type]
    (
        "load_task max_train_samples str",
        lambda m, t, d: ot.load_task("sst2", t, data_dir=d, max_train_samples="5"),  # type: ignore[arg-type]
        "max_train_samples='5'",
    ),
    (
        "load_task text_columns str",
        lambda m, t, d: ot.load_task("glue-tsv", t, data_dir=d, text_columns="sentence"),
        "text_columns='sentence'",
    ),
    (
        "load_task seed str",
        lambda m, t, d: ot.load_task("sst2", t, data_dir=d, seed="1"),
        "seed='1'",
    ),  # type: ignore[arg-type]
    (
        "RunOptions batch_size str",
        lambda m, t, d: ot.RunOptions(batch_size="32"),
        "batch_size='32'",
    ),  # type: ignore[arg-type]
    ("RunOptions evaluate int", lambda m, t, d: ot.RunOptions(evaluate=1), "evaluate=1"),  # type: ignore[arg-type]
    (
        "run_recipe recipe str",
        lambda m, t, d: ot.run_recipe("minilm-sst2-obert80", m, None, d / "out"),  # type: ignore[arg-type]
        "recipe='minilm-sst2-obert80'",
    ),
    (
        "drop_layers num_layers str",
        lambda m, t, d: ot.drop_layers(m, num_layers="1"),
        "num_layers='1'",
    ),  # type: ignore[arg-type]
    ("drop_layers keep str", lambda m, t, d: ot.drop_layers(m, "01"), "keep='01'"),
    ("save_checkpoint output_dir int", lambda m, t, d: ot.save_checkpoint(m, 5), "output_dir=5"),  # type: ignore[arg-type]
    ("save_shrunk output_dir int", lambda m, t, d: ot.save_shrunk(m, 5, {}), "output_dir=5"),  # type: ignore[arg-type]
    ("save_shrunk report None", lambda m, t, d: ot.save_shrunk(m, d / "x", None), "report=None"),  # type: ignore[arg-type]
    (
        "check_same_outputs inputs list",
        lambda m, t, d: ot.check_same_outputs(m, m, [1, 2]),  # type: ignore[arg-type]
        "inputs=[1, 2]",
    ),
    (
        "sparsity_report patterns str",
        lambda m, t, d: ot.sparsity_report(m, "bert.*"),
        "patterns='bert.*'",
    ),
    (
        "resolve_target_params patterns str",
        lambda m, t, d: ot.resolve_target_params(m, "bert.*"),
        "patterns='bert.*'",
    ),
    ("create_method name int", lambda m, t, d: ot.create_method(3), "name=3"),  # type: ignore[arg-type]
    ("method_for_tag int", lambda m, t, d: ot.method_for_tag(3), "tag=3"),  # type: ignore[arg-type]
    ("read_glue_tsv path int", lambda m, t, d: ot.read_glue_tsv(3), "path=3"),  # type: ignore[arg-type]
    ("read_raw_text path None", lambda m, t, d: ot.read_raw_text(None), "path=None"),  # type: ignore[arg-type]
    ("read_squad_json path int", lambda m, t, d: ot.read_squad_json(3), "path=3"),  # type: ignore[arg-type]
    ("check_model_source int", lambda m, t, d: ot.check_model_source(3), "name_or_path=3"),  # type: ignore[arg-type]
    ("load_tokenizer int", lambda m, t, d: ot.load_tokenizer(3), "name_or_path=3"),  # type: ignore[arg-type]
    ("check_output_dir int", lambda m, t, d: ot.check_output_dir(3), "path=3"),  # type: ignore[arg-type]
    ("parse_sets str", lambda m, t, d: ot.parse_sets("a=1"), "items='a=1'"),
    ("build_recipe str", lambda m, t, d: ot.build_recipe("x"), "modifiers='x'"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("call", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wrong_argument_type_is_named(
    call: Call,
    named: str,
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
) -> None:
    """Each public function refuses a wrong type with an ArgumentError naming it."""
    before = {k: v.clone() for k, v in tiny_bert.state_dict().items()}
    with pytest.raises(ot.ArgumentError, match=r"^\w+: ") as info:
        call(tiny_bert, tokenizer, sst2_dir)
    assert isinstance(info.value, TypeError)
    assert named in str(info.value)
    assert all((before[k] == v).all() for k, v in tiny_bert.state_dict().items())


def test_string_number_hint() -> None:
    """A number given as a string says to write it without quotes."""
    with pytest.raises(ot.ArgumentError, match=r"sparsity=0\.5 without quotes"):
        ot.oneshot_prune(None, "magnitude", "0.5")  # type: ignore[arg-type]


def test_range_errors_unchanged(tiny_bert: BertForSequenceClassification) -> None:
    """Values of the right type outside the range keep their ValueError (RecipeError)."""
    with pytest.raises(ot.RecipeError, match=r"1\.5 is outside \[0, 1\)"):
        ot.oneshot_prune(tiny_bert, "magnitude", 1.5)
