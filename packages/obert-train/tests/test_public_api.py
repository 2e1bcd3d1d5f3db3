from __future__ import annotations

from typer.testing import CliRunner

import obert_train
from obert_train.cli import app, main


def test_all_names_exist_once() -> None:  # the order is checked by ruff (RUF022)
    assert len(set(obert_train.__all__)) == len(obert_train.__all__)
    for name in obert_train.__all__:
        assert hasattr(obert_train, name), name


def test_method_registry_has_room_for_new_methods() -> None:
    assert set(obert_train.METHODS) >= {"obert", "magnitude"}
    try:
        obert_train.register_method("test-movement", obert_train.MagnitudePruning)
        assert obert_train.OneShotConfig(method="test-movement", sparsity=0.1)
    finally:
        obert_train.METHODS.pop("test-movement", None)


def test_cli_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["oneshot", "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for option in ("--num-grads", "--block-size", "--mask-type", "--num-recomputations", "--eval"):
        assert option in result.output
    assert callable(main)  # the console-script entry point
