"""Bad input to ``obert quickstart``: one ``error:`` line before any long stage, nothing written.

Each case runs the command on otherwise good inputs (the tiny BERT, its data, tiny recipes) with
one thing wrong and checks: exit code 2, exactly one ``error:`` line naming the problem (the
regex), no traceback, and no file written or changed anywhere under the test's folder (no stage
started).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obert.cache import StageCache
from obert.cli import app

from .conftest import SQUAD_ARGS, quick_args

runner = CliRunner()


@dataclass
class Env:
    """One case's inputs: copies of the good model and data, recipes, a fresh output folder."""

    tmp: Path
    model: Path
    data: Path
    recipes: dict[str, Path]
    out: Path
    squad: Path

    def args(self, *extra: str) -> list[str]:
        return [*quick_args(self.model, self.data, self.recipes, self.out), *extra]


@dataclass
class Case:
    """One bad input: what to change, and what the error must say."""

    id: str
    message: str
    setup: Callable[[Env], list[str]] = field(default=lambda env: [])


def _no_tokenizer(env: Env) -> list[str]:
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (env.model / name).unlink(missing_ok=True)
    return []


def _foreign_tokenizer(env: Env) -> list[str]:
    words = [f"token{i}" for i in range(len((env.model / "vocab.txt").read_text().splitlines()))]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (env.model / "vocab.txt").write_text("\n".join([*specials, *words[5:]]) + "\n")
    (env.model / "tokenizer.json").unlink(missing_ok=True)
    return []


def _no_labels(env: Env) -> list[str]:
    for name in ("train.tsv", "dev.tsv"):
        rows = (env.data / name).read_text().splitlines()
        (env.data / name).write_text("\n".join(r.split("\t")[0] for r in rows) + "\n")
    return []


def _one_label(env: Env) -> list[str]:
    for name in ("train.tsv", "dev.tsv"):
        rows = (env.data / name).read_text().splitlines()
        (env.data / name).write_text(
            "\n".join([rows[0], *(r.rsplit("\t", 1)[0] + "\t1" for r in rows[1:])]) + "\n"
        )
    return []


def _recipe_without_matches(env: Env) -> list[str]:
    text = env.recipes["pruning"].read_text()
    bad = re.sub(r"params: \[.*\]", lambda _: r"params: ['re:decoder\.block\.\d+\.weight$']", text)
    path = env.tmp / "no-match.yaml"
    path.write_text(bad)
    return ["--recipe", str(path)]


def _no_disk_space(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    return []


def _empty_data(env: Env) -> list[str]:
    for name in ("train.tsv", "dev.tsv"):
        (env.data / name).unlink()
    return []


def _distill_missing_output(env: Env) -> list[str]:
    text = env.recipes["pruning"].read_text().replace("[logits]", "[logits, hidden]")
    path = env.tmp / "hidden.yaml"
    path.write_text(text)
    return ["--recipe", str(path)]


def _squad_with_classifier_keys(env: Env) -> list[str]:
    return [*SQUAD_ARGS, "--data-dir", str(env.squad)]  # the tiny recipe distils [logits]


def _dense_recipe_with_distillation(env: Env) -> list[str]:
    kd = env.recipes["pruning"].read_text().split("distillation_modifiers:")[1]
    path = env.tmp / "dense-kd.yaml"
    path.write_text(env.recipes["dense"].read_text() + "distillation_modifiers:" + kd)
    return ["--dense-recipe", str(path)]


def _dev_label_not_in_training(env: Env) -> list[str]:
    dev = env.data / "dev.tsv"
    rows = dev.read_text().splitlines()
    rows[-1] = rows[-1].rsplit("\t", 1)[0] + "\t7"
    dev.write_text("\n".join(rows) + "\n")
    return ["--max-eval-samples", "1"]  # obert-train's seeded dev subset misses that line


def _bad_recipe_and_no_data(env: Env) -> list[str]:
    _empty_data(env)
    return ["--set", "no_such_field=3"]


def _structured_recipe(env: Env, *changes: tuple[str, str]) -> list[str]:
    from obert.defaults import STRUCTURED_RECIPE, shipped_recipe

    text = shipped_recipe(STRUCTURED_RECIPE).read_text()
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path = env.tmp / "structured.yaml"
    path.write_text(text)
    return ["--structured-recipe", str(path)]


def _out_is_file(env: Env) -> list[str]:
    env.out.write_text("not a folder")
    return []


CASES = [
    Case("model-without-tokenizer", r"error: --model .* has no usable tokenizer", _no_tokenizer),
    Case("tokenizer-of-another-model", r"maps \d+% of the training tokens to its unknown token",
         _foreign_tokenizer),
    Case("data-without-labels", r"no label column .* in header", _no_labels),
    Case("data-with-one-label", r"a single label .* at least two classes", _one_label),
    Case("recipe-matches-no-tensor", r"params 're:decoder.*' match no parameter of the model",
         _recipe_without_matches),
    Case("dense-recipe-as-pruning-recipe", r"has no scheduled pruning modifier",
         lambda env: ["--recipe", str(env.recipes["dense"])]),
    Case("pruning-recipe-as-dense-recipe", r"--dense-recipe .* has pruning modifiers",
         lambda env: ["--dense-recipe", str(env.recipes["pruning"])]),
    Case("pruning-steps-past-the-run", r"lands on optimizer step 1, at or after the end of the run",
         lambda env: ["--batch-size", "64"]),
    Case("sparsity-out-of-range", r"--final-sparsity 1.5: a sparsity is a fraction in \[0, 1\)",
         lambda env: ["--final-sparsity", "1.5"]),
    Case("unknown-baseline", r"--baseline 'FooModifier' is not the tag of a gradual pruning",
         lambda env: ["--baseline", "FooModifier"]),
    Case("missing-model", r"no such model folder",
         lambda env: ["--model", str(env.tmp / "nowhere" / "model")]),
    Case("sequence-longer-than-the-model", r"max_seq_length .* 128 is above the maximum 64",
         lambda env: ["--max-seq-length", "128"]),
    Case("no-data-files", r"no train file for task 'sst2'", _empty_data),
    Case("squad-without-data", r"no train file for task 'squad'",
         lambda env: ["--task", "squad", "--data-dir", str(env.tmp / "empty")]),
    Case("output-dir-is-a-file", r"--output-dir .* exists and is not a folder", _out_is_file),
    Case("bad-override", r"override 'no_such_field' applies to no modifier",
         lambda env: ["--set", "no_such_field=3"]),
    Case("recipes-checked-before-the-data", r"override 'no_such_field' applies to no modifier",
         _bad_recipe_and_no_data),
    Case("distill-key-the-model-lacks",
         r"pruning recipe .*: distill_output_keys \['logits', 'hidden'\] include \['hidden'\], "
         r"which --model .* does not output for task 'sst2' \(its outputs: \['logits'\]\)"
         r"; .* --set distill_output_keys=\[logits\]", _distill_missing_output),
    Case("squad-with-a-classifier-distillation-recipe",
         r"distill_output_keys \['logits'\] include \['logits'\], which --model .* does not "
         r"output for task 'squad' \(its outputs: \['start_logits', 'end_logits'\]\); "
         r".* --set distill_output_keys=\[start_logits,end_logits\]",
         _squad_with_classifier_keys),
    Case("dense-recipe-with-distillation", r"--dense-recipe .* has a !DistillationModifier",
         _dense_recipe_with_distillation),
    Case("structured-recipe-with-another-method",
         r"--structured-recipe .*obert.yaml has !OBSPruningModifier; the structured stage "
         r"removes whole FFN neurons and attention heads",
         lambda env: ["--structured-recipe", str(env.recipes["pruning"])]),
    Case("structured-recipe-without-pruning",
         r"--structured-recipe .*dense.yaml has no scheduled !StructuredPruningModifier",
         lambda env: ["--structured-recipe", str(env.recipes["dense"])]),
    Case("structured-recipe-matches-no-tensor",
         r"--structured-recipe .*structured.yaml does not fit --model \(RecipeError: .*params "
         r"'re:decoder.*' match no parameter of the model",
         lambda env: _structured_recipe(env, ("re:encoder", "re:decoder"))),
    Case("structured-recipe-empties-the-layers",
         r"--structured-recipe .*structured.yaml does not fit --model \(TargetError: allocation "
         r"'uniform' at sparsity 0.9 keeps 0 of the 2 heads of every layer",
         lambda env: _structured_recipe(env, ("init_sparsity: 0.25", "init_sparsity: 0.9"),
                                        ("final_sparsity: 0.5\n", "final_sparsity: 0.95\n"))),
    Case("structured-recipe-distils-an-output-the-model-lacks",
         r"--structured-recipe .*structured.yaml: distill_output_keys \['logits', 'hidden'\] "
         r"include \['hidden'\], .* e.g. distill_output_keys: \[logits\] in the recipe \(or "
         r"turn the stage off with --no-structured\)",
         lambda env: _structured_recipe(env, ("[logits]", "[logits, hidden]"))),
    Case("structured-recipe-with-no-structured",
         r"--structured-recipe '.*structured.yaml' with --no-structured: the structured stage "
         r"is off", lambda env: [*_structured_recipe(env), "--no-structured"]),
    Case("dev-label-not-in-training",
         r"dev file .*dev.tsv': example 32 has label '7', which is not among the training "
         r"labels \['0', '1'\]", _dev_label_not_in_training),
]  # fmt: skip


@pytest.fixture
def env(
    tmp_path: Path, model_dir: Path, data_dir: Path, recipes: dict[str, Path], squad_dir: Path
) -> Env:
    model, data, squad = tmp_path / "model", tmp_path / "data", tmp_path / "squad"
    shutil.copytree(model_dir, model)
    shutil.copytree(data_dir, data)
    shutil.copytree(squad_dir, squad)
    (tmp_path / "empty").mkdir()
    return Env(tmp_path, model, data, recipes, tmp_path / "out", squad)


def _snapshot(root: Path) -> dict[str, tuple[float, int, str]]:
    """Every path under ``root``: mtime, size and content hash (folders: their mtime only)."""
    return {
        str(p.relative_to(root)): (
            p.stat().st_mtime,
            p.stat().st_size if p.is_file() else 0,
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "",
        )
        for p in sorted(root.rglob("*"))
    }


def _check(env: Env, extra: list[str], message: str) -> None:
    before = _snapshot(env.tmp)
    result = runner.invoke(app, env.args(*extra))
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{output}"
    )
    assert result.exit_code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert re.search(message, errors[0]), output
    assert "[1/" not in output, "a stage started"
    assert _snapshot(env.tmp) == before, "the failed command changed files"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_quickstart_refuses_bad_input(env: Env, case: Case) -> None:
    _check(env, case.setup(env), case.message)


def test_quickstart_refuses_when_the_disk_is_too_full(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = _no_disk_space(env, monkeypatch)
    _check(env, extra, r"need about [\d.]+ GB .* but only 0.00 GB are free")


def test_quickstart_refuses_an_output_dir_another_run_is_using(env: Env) -> None:
    with StageCache(env.out / "stages").lock():  # as a run in progress holds it
        _check(env, [], r"--output-dir .*out' is in use: another obert quickstart run")


# ---------------------------------------------------------------- the output-folder policy
# docs/train.md, "Output folders"; issue 18 (data loss, failing late).


def _users_report(name: str, text: str) -> Callable[[Env], list[str]]:
    def setup(env: Env) -> list[str]:
        env.out.mkdir()
        (env.out / name).write_text(text)
        return []

    return setup


def _broken_deepsparse(env: Env) -> list[str]:
    cli = env.tmp / "ds" / "obert-deploy"
    cli.parent.mkdir()
    cli.write_text("#!/bin/sh\necho 'ImportError: libdeepsparse.so not found' >&2\nexit 1\n")
    cli.chmod(0o755)
    return ["--deepsparse", str(cli)]


STRUCTURED_KEEP_ALL = """
modifiers:
  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 1.0}
pruning_modifiers:
  - !StructuredPruningModifier
    params: ["re:.*encoder.*dense.weight"]
    init_sparsity: 0.5
    final_sparsity: 0.5
    start_epoch: 0.0
    end_epoch: 0.0
    update_frequency: 1.0
    structure: neurons
    min_keep: 4096
"""


def _structured_keep_all(env: Env) -> list[str]:
    recipe = env.tmp / "keep-all.yaml"
    recipe.write_text(STRUCTURED_KEEP_ALL)
    return ["--recipe", str(recipe), "--baseline", ""]


def _structured_recipe_in_output(env: Env) -> list[str]:
    from obert.defaults import STRUCTURED_RECIPE, shipped_recipe

    env.out.mkdir(parents=True, exist_ok=True)
    path = env.out / "structured.yaml"
    path.write_text(shipped_recipe(STRUCTURED_RECIPE).read_text())
    return ["--structured-recipe", str(path)]


OUTPUT_CASES = [
    Case(
        "output-is-the-model",
        r"--output-dir .* is the input model's folder \(--model\)",
        lambda env: ["--output-dir", str(env.model)],
    ),
    Case(
        "output-holds-the-data",
        r"--output-dir .* contains the input",
        lambda env: ["--output-dir", str(env.tmp)],
    ),
    Case(
        "output-holds-the-structured-recipe",
        r"--output-dir .* contains the input structured recipe \(--structured-recipe\)",
        _structured_recipe_in_output,
    ),
    Case(
        "users-own-report-md",
        r"holds report\.md, which obert quickstart did not write",
        _users_report("report.md", "# my own notes\n"),
    ),
    Case(
        "users-own-report-json",
        r"holds report\.json, which obert quickstart did not write",
        _users_report("report.json", '{"mine": true}\n'),
    ),
    Case(
        "broken-deepsparse-checked-first",
        r"--deepsparse .*obert-deploy' does not run: .* exited with 1: ImportError: "
        r"libdeepsparse\.so not found",
        _broken_deepsparse,
    ),
    Case(
        "structured-min-keep-leaves-nothing",
        r"min_keep=4096 with multiple=16 leaves nothing to remove",
        _structured_keep_all,
    ),
]


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=lambda c: c.id)
def test_quickstart_refuses_an_output_folder_it_must_not_write(env: Env, case: Case) -> None:
    _check(env, case.setup(env), case.message)
