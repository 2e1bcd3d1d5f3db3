from __future__ import annotations

import os
import subprocess
import sys

import obert_train


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


def test_cli_entry_point_help() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from obert_train.cli import main; main()", "oneshot", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1"},
    ).stdout
    for option in ("--num-grads", "--block-size", "--mask-type", "--num-recomputations", "--eval"):
        assert option in out
