"""The stage cache: keys, reuse, reruns on changed inputs, atomic outputs; then on a tiny model.

The last test runs the real pipeline twice on the tiny BERT (without the baseline, to keep it
short): the second run reuses every stage; a third run with another final sparsity reuses the
dense stage and its exports and reruns the pruning stage and everything downstream of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from obert.cache import STAGE_FILE, StageCache, fingerprint_path, stage_key
from obert.cli import app
from obert.errors import PipelineInputError

from .conftest import quick_args


def _writer(calls: list[str], text: str) -> Any:
    def work(folder: Path) -> dict[str, Any]:
        calls.append(text)
        (folder / "out.txt").write_text(text)
        return {"file": "out.txt"}

    return work


def test_key_depends_on_name_and_inputs_not_on_order() -> None:
    assert stage_key("a", {"x": 1, "y": [1, 2]}) == stage_key("a", {"y": [1, 2], "x": 1})
    assert stage_key("a", {"x": 1}) != stage_key("a", {"x": 2})
    assert stage_key("a", {"x": 1}) != stage_key("b", {"x": 1})


def test_finished_stage_is_reused_and_changed_input_reruns(tmp_path: Path) -> None:
    cache, calls = StageCache(tmp_path), []
    first = cache.run("s", {"x": 1}, _writer(calls, "one"))
    again = cache.run("s", {"x": 1}, _writer(calls, "unused"))
    assert (first.cached, again.cached) == (False, True)
    assert calls == ["one"] and again.path("file").read_text() == "one"
    changed = cache.run("s", {"x": 2}, _writer(calls, "two"))
    assert not changed.cached and changed.path("file").read_text() == "two"
    assert json.loads((tmp_path / "s" / STAGE_FILE).read_text())["inputs"] == {"x": 2}


def test_disabled_cache_reruns(tmp_path: Path) -> None:
    calls: list[str] = []
    StageCache(tmp_path).run("s", {"x": 1}, _writer(calls, "one"))
    forced = StageCache(tmp_path, enabled=False).run("s", {"x": 1}, _writer(calls, "again"))
    assert not forced.cached and calls == ["one", "again"]


def test_failed_stage_leaves_the_old_result_and_no_partial_folder(tmp_path: Path) -> None:
    cache, calls = StageCache(tmp_path), []
    cache.run("s", {"x": 1}, _writer(calls, "one"))

    def broken(folder: Path) -> dict[str, Any]:
        (folder / "half.txt").write_text("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.run("s", {"x": 2}, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert (tmp_path / "s" / "out.txt").read_text() == "one"
    assert cache.lookup("s", stage_key("s", {"x": 1})) is not None


def test_leftover_of_a_killed_stage_is_removed(tmp_path: Path) -> None:
    (tmp_path / ".s.tmp-12345").mkdir(parents=True)
    StageCache(tmp_path).run("s", {}, _writer([], "one"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_a_second_lock_on_the_stages_folder_is_refused_until_the_first_ends(
    tmp_path: Path,
) -> None:
    root = tmp_path / "out" / "stages"
    with StageCache(root).lock():
        assert root.is_dir()
        with (
            pytest.raises(PipelineInputError, match=r"--output-dir .*out' is in use"),
            StageCache(root).lock(),
        ):
            pass
        code = (
            "import sys; from obert.cache import StageCache\n"
            "try:\n    with StageCache(sys.argv[1]).lock(): print('locked')\n"
            "except Exception as exc: print(type(exc).__name__)"
        )
        other = subprocess.run(
            [sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True
        )
        assert other.stdout.strip() == "PipelineInputError", other.stderr
    with StageCache(root).lock():  # released at the end of the block
        pass
    assert sorted(p.name for p in root.iterdir()) == []  # no lock file left behind


def test_fingerprints_see_content_and_names(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.txt").write_text("1")
    before = fingerprint_path(folder)
    (folder / "a.txt").write_text("2")
    assert fingerprint_path(folder) != before
    assert fingerprint_path("bert-base-uncased") == "name:bert-base-uncased"


def _stages(out: Path) -> dict[str, bool]:
    report = json.loads((out / "report.json").read_text())
    return {s["name"]: s["cached"] for s in report["stages"]}


@pytest.mark.slow  # three pipeline runs with ONNX exports: about a minute, longer under load
def test_quickstart_reuses_stages_and_reruns_what_changed(
    tmp_path: Path, model_dir: Path, data_dir: Path, recipes: dict[str, Path]
) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    args = [*quick_args(model_dir, data_dir, recipes, out), "--no-onnx-eval", "--baseline", "none"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert not any(_stages(out).values())
    for name in ("report.md", "report.json", "quickstart_accuracy.png", "quickstart_size.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["obert"]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert [round(p["sparsity"], 2) for p in report["models"]["obert"]["curve"]] == [0.5, 0.8]
    assert report["models"]["obert"]["export"]["zeros_kept"]
    assert "gmp" not in report["models"]

    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert all(_stages(out).values()), _stages(out)

    third = runner.invoke(app, [*args, "--final-sparsity", "0.7"])
    assert third.exit_code == 0, third.output
    cached = _stages(out)
    assert cached["dense"] and cached["export-dense"] and cached["int8-dense"]
    rerun = ["obert", "export-obert", "int8-obert", "bench", "size"]
    assert not any(cached[name] for name in rerun), cached
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["obert"]["sparsity"] == pytest.approx(0.7, abs=1e-3)
