"""Every command line answers ``-h`` and ``--version`` and is quiet about third parties (issue 18).

``obert-train``, ``obert-deploy`` and ``obert``: ``-h`` on the program and on every (sub)command,
``--version`` on the program, :func:`obert_core.shared.quiet_third_party` at the entry, and
quickstart's help without a literal ``\\b`` or a split ``bert-base-uncased``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

pytest.importorskip("obert_train")
pytest.importorskip("obert_deploy")
pytest.importorskip("obert")

from obert.cli import app as obert_app
from obert_deploy.cli import app as deploy_app
from obert_train.cli import app as train_app

runner = CliRunner()

APPS = {"obert-train": train_app, "obert-deploy": deploy_app, "obert": obert_app}


def _paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if hasattr(command, "commands"):  # a group (typer may vendor click: no isinstance)
        for name, sub in command.commands.items():
            paths += _paths(sub, (*prefix, name))
    return paths


CASES = [
    (program, path) for program, app in APPS.items() for path in _paths(typer.main.get_command(app))
]


@pytest.mark.parametrize(("program", "path"), CASES, ids=[" ".join([p, *c]) for p, c in CASES])
def test_dash_h_is_help_everywhere(program: str, path: tuple[str, ...]) -> None:
    result = runner.invoke(APPS[program], [*path, "-h"], prog_name=program)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert "-h, --help" in result.output


@pytest.mark.parametrize("program", list(APPS))
def test_version(program: str) -> None:
    result = runner.invoke(APPS[program], ["--version"], prog_name=program)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"{program} \d+\.\d+\.\d+\S*\n", result.output)


@pytest.mark.parametrize("program", list(APPS))
def test_every_entry_silences_third_party_noise(
    program: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The program's entry (its group callback) quiets torchao & co. before any command runs."""
    logger = logging.getLogger("torchao")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    command = {"obert-train": "methods", "obert-deploy": "size", "obert": "quickstart"}[program]
    runner.invoke(APPS[program], [command, "--no-such-option"], prog_name=program)
    assert logger.level == logging.ERROR


def test_quickstart_help_has_no_literal_backslash_b_nor_split_names() -> None:
    result = runner.invoke(
        obert_app, ["quickstart", "--help"], prog_name="obert", terminal_width=80
    )
    assert result.exit_code == 0
    assert "\\b" not in result.output and "\b" not in result.output
    assert "--model bert-base-uncased --dataset glue:sst2" in result.output


# One vocabulary: each idea has one option name in every CLI; old spellings are hidden aliases.


@pytest.mark.parametrize(
    ("program", "args", "shown"),
    [
        ("obert-deploy", ["export", "ck", "-o", "m.onnx", "--seq-len", "1"], "'--max-seq-length'"),
        ("obert-deploy", ["export", "ck", "-o", "m.onnx", "--seq-len=1"], "'--max-seq-length'"),
        ("obert-deploy", ["evaluate", "ck", "m.onnx", "--max-samples", "0"], "--max-eval-samples"),
        ("obert-deploy", ["qat", "ck", "-o", "q.onnx", "--lr", "-1"], "'--learning-rate'"),
        (
            "obert-deploy",
            ["export", "ck", "-o", "m.onnx", "--task", "squad", "--seq-len", "1"],
            "'--max-seq-length'",
        ),
        ("obert-train", ["drop-layers", "no/such/model", "-o", "out", "--keep", "0"], "no/such"),
    ],
)
def test_old_spellings_still_work(program: str, args: list[str], shown: str) -> None:
    """An alias is parsed as the one name: the error is about the value, never the option."""
    result = runner.invoke(APPS[program], args, prog_name=program)
    assert result.exit_code == 2, result.output
    assert shown in result.output
    assert "No such option" not in result.output and "Missing option" not in result.output
    assert "is not one of" not in result.output  # --task squad read as question-answering


@pytest.mark.parametrize(
    ("program", "path", "name", "old"),
    [
        ("obert-deploy", ["export"], "--max-seq-length", "--seq-len"),
        ("obert-deploy", ["evaluate"], "--max-eval-samples", "--max-samples"),
        ("obert-deploy", ["evaluate"], "--text-column", "--text-columns"),
        ("obert-deploy", ["qat"], "--train-file", "--train-data"),
        ("obert-deploy", ["qat"], "--learning-rate", "--lr "),
        ("obert-train", ["run"], "--max-seq-length", "--seq-len"),
        ("obert", ["quickstart"], "--max-seq-length", "--seq-len"),
    ],
)
def test_help_shows_one_name_per_idea(program: str, path: list[str], name: str, old: str) -> None:
    result = runner.invoke(APPS[program], [*path, "-h"], prog_name=program, terminal_width=200)
    assert name in result.output and old not in result.output
