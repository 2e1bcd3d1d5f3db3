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
