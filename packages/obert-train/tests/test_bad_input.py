"""Bad input for every obert-train command and Python entry point: one table per command.

Each case runs the command on otherwise good inputs with one thing wrong and checks that the
tool exits with code 2, prints exactly one ``error:`` line that names the bad value (the regex),
prints no traceback, and leaves every folder as it was (nothing written, nothing deleted).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from obert_train import (
    ObertTrainError,
    RunOptions,
    create_method,
    load_recipe,
    load_task,
    oneshot_prune,
    run_recipe,
)
from obert_train.cli.app import app

from .conftest import CONTEXT, QUESTIONS, squad_payload

runner = CliRunner()

TINY_RECIPE = """
modifiers:
  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 1.0}
pruning_modifiers:
  - !GMPruningModifier
    params: ["re:.*encoder.*dense.weight"]
    init_sparsity: 0.5
    final_sparsity: 0.5
    start_epoch: 0.0
    end_epoch: 0.0
    update_frequency: 1.0
"""


@dataclass
class Env:
    """Paths of one case: a good model, good data, a fresh output folder and scratch space."""

    tmp: Path
    model: Path
    data: Path
    squad: Path
    out: Path
    recipe: Path

    def scratch(self, name: str) -> Path:
        path = self.tmp / "scratch" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Case:
    """One bad input: how to build the arguments, what the error must say."""

    id: str
    args: Callable[[Env], list[str]]
    message: str
    setup: Callable[[Env], None] = field(default=lambda env: None)


def _run(env: Env, *extra: str, recipe: str | None = None, model: Path | None = None) -> list[str]:
    return [
        "run", recipe or str(env.recipe), "--model", str(model or env.model), "--task", "sst2",
        "--data-dir", str(env.data), "--output-dir", str(env.out), "--no-progress",
        "--batch-size", "4", *extra,
    ]  # fmt: skip


def _oneshot(env: Env, *extra: str, model: Path | None = None) -> list[str]:
    small = [] if "--method" in extra else ["--num-grads", "4", "--grad-batch-size", "2"]
    small += [] if "--method" in extra else ["--fisher-block-size", "8"]
    return [
        "oneshot", "--model", str(model or env.model), "--task", "sst2",
        "--data-dir", str(env.data), "--output-dir", str(env.out), "--no-progress",
        *small, *extra,
    ]  # fmt: skip


def _squad(env: Env, *extra: str, cmd: str = "oneshot") -> list[str]:
    head = ["oneshot", "--sparsity", "0.5"] if cmd == "oneshot" else ["run", str(env.recipe)]
    return [
        *head, "--model", str(env.model), "--task", "squad", "--data-dir", str(env.squad),
        "--output-dir", str(env.out), "--no-progress", *extra,
    ]  # fmt: skip


# ---------------------------------------------------------------- broken model folders


def _copy_model(env: Env, name: str) -> Path:
    target = env.scratch(name)
    target.mkdir()
    for item in env.model.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


def _corrupt_weights(env: Env) -> None:
    target = _copy_model(env, "corrupt")
    (target / "model.safetensors").write_bytes(b"\x00" * 64)


def _no_weights(env: Env) -> None:
    target = _copy_model(env, "noweights")
    (target / "model.safetensors").unlink()


def _no_tokenizer(env: Env) -> None:
    target = _copy_model(env, "notok")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (target / name).exists():
            (target / name).unlink()


def _empty_dir(env: Env) -> None:
    env.scratch("empty").mkdir()


def _nan_model(env: Env) -> None:
    from transformers import AutoModelForSequenceClassification

    target = _copy_model(env, "nan")
    model = AutoModelForSequenceClassification.from_pretrained(target)
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight[0, 0] = float("nan")
    model.save_pretrained(target)


def _foreign_file(env: Env) -> None:
    env.out.mkdir()
    (env.out / "NOTES.txt").write_text("mine\n")


def _file_as_output(env: Env) -> None:
    env.out.parent.mkdir(parents=True, exist_ok=True)
    env.out.write_text("a file\n")


def _read_only_output(env: Env) -> None:
    env.out.mkdir()
    env.out.chmod(stat.S_IRUSR | stat.S_IXUSR)


# ---------------------------------------------------------------- broken data


def _squad_file(env: Env, payload: dict[str, Any]) -> None:
    (env.squad / "train-v1.1.json").write_text(json.dumps(payload))


def _squad_bad_start(env: Env) -> None:
    payload = squad_payload(QUESTIONS)
    payload["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = "five"  # type: ignore[index]
    _squad_file(env, payload)


def _squad_text_mismatch(env: Env) -> None:
    qid, question, answer, _ = QUESTIONS[2]
    wrong = CONTEXT.index("Berlin")
    _squad_file(env, squad_payload([*QUESTIONS[:2], (qid, question, answer, wrong)]))


def _tsv_no_label(env: Env) -> None:
    (env.data / "train.tsv").write_text("sentence\nsome text\nmore text\n")


def _other_vocab_teacher(env: Env) -> None:
    from transformers import AutoTokenizer, BertForSequenceClassification

    from .conftest import tiny_config

    tokenizer = AutoTokenizer.from_pretrained(env.model)
    teacher = BertForSequenceClassification(tiny_config(len(tokenizer) + 50, num_labels=2))
    teacher.save_pretrained(env.scratch("big"))
    tokenizer.save_pretrained(env.scratch("big"))
    kd = "distillation_modifiers:\n  - !DistillationModifier {hardness: 0.5, temperature: 2.0}\n"
    env.scratch("kd.yaml").write_text(TINY_RECIPE + kd)


def _other_tokenizer_teacher(env: Env) -> None:
    """A teacher of the student's vocabulary size whose tokenizer maps two words the other way."""
    from transformers import AutoTokenizer, BertTokenizer

    target = _copy_model(env, "othertok")
    vocab = AutoTokenizer.from_pretrained(env.model).get_vocab()
    words = sorted(vocab, key=vocab.__getitem__)
    words[-1], words[-2] = words[-2], words[-1]
    swapped = env.scratch("swapped")
    swapped.mkdir()
    (swapped / "vocab.txt").write_text("\n".join(words) + "\n")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (target / name).unlink(missing_ok=True)
    BertTokenizer.from_pretrained(swapped).save_pretrained(target)
    kd = "distillation_modifiers:\n  - !DistillationModifier {hardness: 0.5, temperature: 2.0}\n"
    env.scratch("kd.yaml").write_text(TINY_RECIPE + kd)


def _teacher_without_key(env: Env) -> None:
    """A teacher copy of the student and a recipe distilling an output neither model has."""
    _copy_model(env, "sameteacher")
    kd = (
        "distillation_modifiers:\n  - !DistillationModifier {hardness: 0.5, temperature: 2.0, "
        "distill_output_keys: [logits, hidden]}\n"
    )
    env.scratch("kd-hidden.yaml").write_text(TINY_RECIPE + kd)


TRANSFER_RECIPE = """
modifiers:
  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 1.0}
pruning_modifiers:
  - !ConstantPruningModifier
    params: [PARAMS]
"""


def _transfer_recipes(env: Env) -> None:
    dense = TRANSFER_RECIPE.replace("PARAMS", '"re:.*encoder.*dense.weight"')
    env.scratch("transfer.yaml").write_text(dense)
    nothing = TRANSFER_RECIPE.replace("PARAMS", '"re:.*no_such_layer.weight"')
    env.scratch("transfer-nothing.yaml").write_text(nothing)


def _gpt2_model(env: Env) -> None:
    """A model without a known layer list (GPT-2 keeps its blocks in transformer.h)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(env.model)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(env.scratch("gpt2"))
    tokenizer.save_pretrained(env.scratch("gpt2"))


def _earlier_checkpoint(env: Env) -> None:
    env.out.mkdir()
    (env.out / "config.json").write_text("{}\n")


def _articles(env: Env) -> None:
    """A SQuAD file of two articles (titles A and B)."""
    payload: Any = squad_payload(QUESTIONS)
    article = payload["data"][0]
    payload["data"] = [{**article, "title": "A"}, {**article, "title": "B"}]
    env.scratch("articles.json").write_text(json.dumps(payload))


def _yaml_broken(env: Env) -> None:
    env.scratch("broken.yaml").write_text("modifiers: [\n")


RUN_CASES = [
    Case("recipe-unknown", lambda e: _run(e, recipe="no-such-recipe"), "no-such-recipe"),
    Case(
        "recipe-broken-yaml",
        lambda e: _run(e, recipe=str(e.scratch("broken.yaml"))),
        "broken.yaml",
        _yaml_broken,
    ),
    Case("model-missing", lambda e: _run(e, model=e.tmp / "nope"), "no such model folder"),
    Case(
        "model-empty-folder",
        lambda e: _run(e, model=e.scratch("empty")),
        "without config.json",
        _empty_dir,
    ),
    Case(
        "model-corrupt-weights",
        lambda e: _run(e, model=e.scratch("corrupt")),
        r"corrupt.*model\.safetensors.*cannot be read",
        _corrupt_weights,
    ),
    Case(
        "model-no-weights",
        lambda e: _run(e, model=e.scratch("noweights")),
        "noweights.*no model weights",
        _no_weights,
    ),
    Case(
        "model-no-tokenizer",
        lambda e: _run(e, model=e.scratch("notok")),
        "notok.*no usable tokenizer",
        _no_tokenizer,
    ),
    Case(
        "model-bad-hub-id",
        lambda e: _run(e, model=Path("not a/valid id")),
        "'not a/valid id' is neither a model folder nor a valid hub id",
    ),
    Case(
        "seq-above-model-max",
        lambda e: _run(e, "--max-seq-length", "4096"),
        r"--max-seq-length\) 4096 is above the maximum 128",
    ),
    Case("seq-too-small", lambda e: _run(e, "--max-seq-length", "2"), r"--max-seq-length\) 2"),
    Case(
        "train-samples-zero",
        lambda e: _run(e, "--max-train-samples", "0"),
        r"--max-train-samples\) 0",
    ),
    Case("threads-zero", lambda e: _run(e, "--threads", "0"), "'--threads'"),
    Case("batch-zero", lambda e: _run(e, "--batch-size", "0"), "'--batch-size'"),
    Case("output-is-file", lambda e: _run(e), "exists and is not a folder", _file_as_output),
    Case("output-foreign-files", lambda e: _run(e), r"not empty \(NOTES\.txt\)", _foreign_file),
    Case("resume-empty", lambda e: _run(e, "--resume"), "--resume.*nothing to resume"),
    Case("set-no-equals", lambda e: _run(e, "--set", "final_sparsity"), "expected KEY=VALUE"),
    Case("set-unknown-key", lambda e: _run(e, "--set", "finl_sparsity=0.9"), "finl_sparsity"),
    Case(
        "set-sparsity-one",
        lambda e: _run(e, "--set", "final_sparsity=1.0"),
        r"final_sparsity = 1 .*must be < 1",
    ),
    Case(
        "teacher-missing-for-kd",
        lambda e: _run(e, recipe="minilm-sst2-obert80", model=e.model),
        "no --teacher",
    ),
    Case("teacher-not-found", lambda e: _run(e, "--teacher", str(e.tmp / "t")), "--teacher"),
    Case("data-dir-missing", lambda e: _run(e, "--data-dir", str(e.tmp / "nodata")), "nodata"),
    Case("train-no-label-column", lambda e: _run(e), r"train\.tsv.*label", _tsv_no_label),
    Case(
        "dev-file-missing",
        lambda e: _run(e, "--dev-file", str(e.tmp / "dev-x.tsv")),
        "dev-x.tsv",
    ),
    Case(
        "squad-bad-answer-start",
        lambda e: _squad(e, cmd="run"),
        r"train-v1\.1\.json.*q2.*answer_start 'five'",
        _squad_bad_start,
    ),
    Case(
        "squad-answer-text-mismatch",
        lambda e: _squad(e, cmd="run"),
        r"train-v1\.1\.json.*q3.*'Paris'.*answer_start",
        _squad_text_mismatch,
    ),
    Case(
        "nan-weights",
        lambda e: _run(e, model=e.scratch("nan")),
        r"non-finite.*bert\.encoder\.layer\.0\.attention\.self\.query\.weight",
        _nan_model,
    ),
    Case("read-only-output", lambda e: _run(e), "not writable", _read_only_output),
    Case(
        "output-under-a-file",
        lambda e: _run(e, "--output-dir", str(e.out / "sub")),
        "cannot be created: .* is a file",
        _file_as_output,
    ),
    Case(
        "lr-zero", lambda e: _run(e, "--learning-rate", "0"), r"learning_rate \(--learning-rate\) 0"
    ),
    Case(
        "teacher-other-vocab",
        lambda e: _run(e, "--teacher", str(e.scratch("big")), recipe=str(e.scratch("kd.yaml"))),
        "vocabulary|tokens",
        _other_vocab_teacher,
    ),
    Case(
        "teacher-other-tokenizer",
        lambda e: _run(
            e, "--teacher", str(e.scratch("othertok")), recipe=str(e.scratch("kd.yaml"))
        ),
        r"--teacher '.*othertok': its tokenizer differs from the student's: 50 vs 50 tokens, "
        r"2 with other ids",
        _other_tokenizer_teacher,
    ),
    Case(
        "distilled-output-missing",
        lambda e: _run(
            e, "--teacher", str(e.scratch("sameteacher")), recipe=str(e.scratch("kd-hidden.yaml"))
        ),
        r"the student model has no output 'hidden' to distill \(its outputs: \['logits'\]\); "
        r"set distill_output_keys to outputs both models have, e.g. --set "
        r"distill_output_keys=\[logits\]",
        _teacher_without_key,
    ),
    Case(
        "transfer-dense-model",
        lambda e: _run(e, recipe=str(e.scratch("transfer.yaml"))),
        r"!ConstantPruningModifier keeps the zeros .* have no zeros: the model is dense",
        _transfer_recipes,
    ),
    Case(
        "transfer-params-match-nothing",
        lambda e: _run(e, recipe=str(e.scratch("transfer-nothing.yaml"))),
        r"params 're:\.\*no_such_layer\.weight' match no parameter",
        _transfer_recipes,
    ),
    Case(
        "split-articles-too-many",
        lambda e: _squad(
            e,
            "--split-articles",
            "40:8",
            "--train-file",
            str(e.scratch("articles.json")),
            cmd="run",
        ),
        r"--split-articles\) 40:8 asks for 48 articles, but .*articles\.json has only 2",
        _articles,
    ),
]

ONESHOT_CASES = [
    Case("sparsity-one", lambda e: _oneshot(e, "--sparsity", "1.0"), r"--sparsity 1\.0 .*\[0, 1\)"),
    Case(
        "nm-with-other-sparsity",
        lambda e: _oneshot(e, "--sparsity", "0.7", "--mask-type", "2:4"),
        r"2:4.*0\.5.*0\.7",
    ),
    Case(
        "set-unknown-lists-valid",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--set", "block=8"),
        r"unknown setting 'block'.*fisher_block_size",
    ),
    Case(
        "setting-of-other-method",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--method", "magnitude", "--set", "damp=1"),
        r"'magnitude': unknown setting 'damp'; allowed: .*mask_type",
    ),
    Case(
        "model-corrupt-weights",
        lambda e: _oneshot(e, "--sparsity", "0.5", model=e.scratch("corrupt")),
        r"model\.safetensors.*cannot be read",
        _corrupt_weights,
    ),
    Case(
        "model-no-tokenizer",
        lambda e: _oneshot(e, "--sparsity", "0.5", model=e.scratch("notok")),
        "no usable tokenizer",
        _no_tokenizer,
    ),
    Case(
        "seq-above-model-max",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--max-seq-length", "4096"),
        r"--max-seq-length\) 4096 is above the maximum 128",
    ),
    Case(
        "output-is-file",
        lambda e: _oneshot(e, "--sparsity", "0.5"),
        "exists and is not a folder",
        _file_as_output,
    ),
    Case(
        "read-only-output",
        lambda e: _oneshot(e, "--sparsity", "0.5"),
        "not writable",
        _read_only_output,
    ),
    Case(
        "method-that-does-not-prune",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--method", "constant"),
        "method 'constant' does not prune",
    ),
    Case("method-unknown", lambda e: _oneshot(e, "--sparsity", "0.5", "--method", "obs"), "'obs'"),
    Case(
        "flag-of-another-method",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--method", "structured", "--damp", "1e-4"),
        "--damp does not apply to method 'structured'; its settings are",
    ),
    Case(
        "structured-below-min-keep",
        lambda e: _oneshot(
            e,
            "--sparsity",
            "0.9",
            "--method",
            "structured",
            "--set",
            "min_keep=32",
            "--set",
            "num_batches=1",
            "--set",
            "grad_batch_size=4",
        ),
        "min_keep",
    ),
    Case(
        "structured-calibration-too-short",
        lambda e: _oneshot(
            e, "--sparsity", "0.5", "--method", "structured", "--set", "grad_batch_size=500"
        ),
        "at least one batch of 500 examples",
    ),
    Case(
        "structured-heads-on-gqa-or-unknown-layout",
        lambda e: _oneshot(
            e,
            "--sparsity",
            "0.5",
            "--method",
            "structured",
            "--set",
            "structure=experts",
            "--set",
            "num_batches=1",
            "--set",
            "grad_batch_size=4",
        ),
        "no fused MoE experts; expected .*gate_up_proj",
    ),
    Case(
        "output-under-a-file",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--output-dir", str(e.out / "sub")),
        "cannot be created: .* is a file",
        _file_as_output,
    ),
    Case(
        "squad-option-on-sst2",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--doc-stride", "64"),
        "--doc-stride apply to --task squad",
    ),
    Case(
        "label-column-absent",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--label-column", "gold"),
        r"train\.tsv: no label column \['gold'\]",
    ),
    Case(
        "num-grads-zero",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--num-grads", "0"),
        r"num_grads = 0",
    ),
    Case(
        "nan-weights",
        lambda e: _oneshot(e, "--sparsity", "0.5", model=e.scratch("nan")),
        r"non-finite.*query\.weight",
        _nan_model,
    ),
    Case(
        "squad-bad-answer-start",
        lambda e: _squad(e),
        r"q2.*answer_start 'five'",
        _squad_bad_start,
    ),
    Case(
        "threads-negative",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--threads", "-1"),
        "'--threads'",
    ),
    Case(
        "eval-batch-zero",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--eval", "--eval-batch-size", "0"),
        "'--eval-batch-size'",
    ),
    Case(
        "split-articles-on-sst2",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--split-articles", "1:1"),
        r"--split-articles\) 1:1 splits SQuAD articles; it applies to task 'squad', not to "
        r"task 'sst2'",
    ),
    Case(
        "split-articles-malformed",
        lambda e: _squad(e, "--split-articles", "40-8"),
        r"--split-articles '40-8': expected TRAIN:EVAL",
    ),
    Case(
        "split-articles-zero",
        lambda e: _squad(e, "--split-articles", "0:1"),
        r"--split-articles\) 0:1: both counts must be whole numbers of articles >= 1",
    ),
    Case(
        "split-articles-two-files-in-folder",
        lambda e: _squad(e, "--split-articles", "1:1"),
        r"holds train-v1\.1\.json, dev-v1\.1\.json; .* splits ONE file",
    ),
    Case(
        "split-seed-without-split",
        lambda e: _squad(e, "--split-seed", "3"),
        "--split-seed 3 applies only together with --split-articles",
    ),
]

RECIPE_CASES = [
    Case("show-missing", lambda e: ["recipe", "show", str(e.tmp / "x.yaml")], "x.yaml"),
    Case(
        "show-broken",
        lambda e: ["recipe", "show", str(e.scratch("broken.yaml"))],
        "broken.yaml",
        _yaml_broken,
    ),
    Case("show-folder", lambda e: ["recipe", "show", str(e.tmp)], "folder"),
    Case(
        "show-bad-set",
        lambda e: ["recipe", "show", "minilm-sst2-obert80", "--set", "final_sparsity=2"],
        "final_sparsity",
    ),
]


def _drop(env: Env, *extra: str, model: Path | None = None) -> list[str]:
    return ["drop-layers", str(model or env.model), "--output-dir", str(env.out), *extra]


DROP_CASES = [
    Case(
        "keep-out-of-range",
        lambda e: _drop(e, "--keep", "0,2"),
        r"keep \(--keep\) 0,2: layer\(s\) \[2\] out of range; the model has 2 layers, "
        r"numbered 0 to 1",
    ),
    Case("keep-negative", lambda e: _drop(e, "--keep", "-1"), r"layer\(s\) \[-1\] out of range"),
    Case(
        "keep-unsorted",
        lambda e: _drop(e, "--keep", "1,0"),
        r"keep \(--keep\) 1,0: give the layers in increasing order \(0,1\)",
    ),
    Case(
        "keep-duplicates",
        lambda e: _drop(e, "--keep", "1,1"),
        r"keep \(--keep\) 1,1: layer\(s\) \[1\] given twice",
    ),
    Case("keep-empty", lambda e: _drop(e, "--keep", ""), "--keep is empty"),
    Case(
        "keep-malformed",
        lambda e: _drop(e, "--keep", "0;1"),
        r"--keep '0;1': expected comma-separated layer numbers",
    ),
    Case(
        "keep-and-num-layers",
        lambda e: _drop(e, "--keep", "0", "--num-layers", "1"),
        "--keep and --num-layers both given",
    ),
    Case("neither-keep-nor-num-layers", lambda e: _drop(e), "give --keep 0,2,4"),
    Case(
        "num-layers-zero",
        lambda e: _drop(e, "--num-layers", "0"),
        r"num_layers \(--num-layers\) 0: the model has 2 layers; keep between 1 and 2",
    ),
    Case(
        "num-layers-above-the-model",
        lambda e: _drop(e, "--num-layers", "3"),
        r"num_layers \(--num-layers\) 3: the model has 2 layers",
    ),
    Case(
        "model-without-a-known-layer-list",
        lambda e: _drop(e, "--keep", "0", model=e.scratch("gpt2")),
        r"GPT2LMHeadModel has no known list of transformer layers: expected a ModuleList "
        r"named \.\.\.encoder\.layer .*transformer\.layer .*model\.layers.*transformer\.h",
        _gpt2_model,
    ),
    Case("model-missing", lambda e: _drop(e, "--keep", "0", model=e.tmp / "nope"), "nope"),
    Case(
        "model-no-tokenizer",
        lambda e: _drop(e, "--keep", "0", model=e.scratch("notok")),
        "no usable tokenizer",
        _no_tokenizer,
    ),
    Case(
        "model-corrupt-weights",
        lambda e: _drop(e, "--keep", "0", model=e.scratch("corrupt")),
        r"model\.safetensors.*cannot be read",
        _corrupt_weights,
    ),
    Case(
        "output-not-empty",
        lambda e: _drop(e, "--keep", "0"),
        r"not empty \(NOTES\.txt\); pass --overwrite",
        _foreign_file,
    ),
    Case(
        "overwrite-a-folder-that-is-no-checkpoint",
        lambda e: _drop(e, "--keep", "0", "--overwrite"),
        r"holds files but no checkpoint \(NOTES\.txt\)",
        _foreign_file,
    ),
    Case(
        "output-is-the-input-model",
        lambda e: _drop(e, "--keep", "0", "--overwrite", "--output-dir", str(e.model)),
        "is the input model's folder",
    ),
    Case(
        "output-checkpoint-without-overwrite",
        lambda e: _drop(e, "--keep", "0"),
        r"not empty \(config\.json\)",
        _earlier_checkpoint,
    ),
    Case(
        "output-is-file",
        lambda e: _drop(e, "--keep", "0"),
        "exists and is not a folder",
        _file_as_output,
    ),
    Case("read-only-output", lambda e: _drop(e, "--keep", "0"), "not writable", _read_only_output),
]


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path, sst2_dir: Path, squad_dir: Path) -> Env:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    # The tiny model fixture lives under tmp_path too; snapshot excludes nothing.
    return Env(tmp_path, tiny_model_dir, sst2_dir, squad_dir, tmp_path / "out", recipe)


def _snapshot(root: Path) -> dict[str, tuple[float, int, str]]:
    """Every path under ``root``: mtime, size and content hash (folders: -1, 0, "")."""
    return {
        str(p.relative_to(root)): (
            (p.stat().st_mtime, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            if p.is_file()
            else (-1.0, 0, "")
        )
        for p in sorted(root.rglob("*"))
        if not p.name.startswith("cache-")
    }


def _check(env: Env, case: Case) -> None:
    if case.setup is _read_only_output and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the case needs an ordinary user")
    case.setup(env)
    before = _snapshot(env.tmp)
    try:
        result = runner.invoke(app, case.args(env))
    finally:
        if env.out.is_dir():
            env.out.chmod(stat.S_IRWXU)
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{output}"
    )
    assert result.exit_code == 2, output
    assert "Traceback" not in output, output
    assert "pydantic.dev" not in output and "For further information" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    if not errors:  # click's own usage errors (option out of range) are boxed
        assert "Invalid value" in output or "Error" in output, output
    else:
        assert len(errors) == 1, output
    assert re.search(case.message, " ".join(output.split())), output
    assert _snapshot(env.tmp) == before, "the failed command changed files"


@pytest.mark.parametrize("case", RUN_CASES, ids=lambda c: c.id)
def test_run_refuses_bad_input(env: Env, case: Case) -> None:
    _check(env, case)


@pytest.mark.parametrize("case", ONESHOT_CASES, ids=lambda c: c.id)
def test_oneshot_refuses_bad_input(env: Env, case: Case) -> None:
    _check(env, case)


@pytest.mark.parametrize("case", RECIPE_CASES, ids=lambda c: c.id)
def test_recipe_refuses_bad_input(env: Env, case: Case) -> None:
    _check(env, case)


@pytest.mark.parametrize("case", DROP_CASES, ids=lambda c: c.id)
def test_drop_layers_refuses_bad_input(env: Env, case: Case) -> None:
    _check(env, case)


# ---------------------------------------------------------------- Python entry points


def _tiny(env: Env) -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(env.model)


def _task(env: Env, **kw: Any) -> Any:
    from transformers import AutoTokenizer

    return load_task("sst2", AutoTokenizer.from_pretrained(env.model), data_dir=env.data, **kw)


PY_CASES: list[tuple[str, Callable[[Env], object], str]] = [
    ("load_task-unknown", lambda e: _task(e) and load_task("cola", None), "unknown task 'cola'"),  # type: ignore[arg-type]
    (
        "load_task-seq",
        lambda e: _task(e, max_seq_length=4),
        r"max_seq_length \(--max-seq-length\) 4",
    ),
    ("load_task-samples", lambda e: _task(e, max_train_samples=0), r"max_train_samples \(.*\) 0"),
    ("load_recipe-missing", lambda e: load_recipe(str(e.tmp / "r.yaml")), "r.yaml"),
    ("create_method-unknown", lambda e: create_method("obs"), "pruning method 'obs' unknown"),
    (
        "create_method-bad-setting",
        lambda e: create_method("obert", fisher_block_size=0),
        "fisher_block_size = 0",
    ),
    (
        "oneshot-sparsity",
        lambda e: oneshot_prune(_tiny(e), "magnitude", 1.5, task=_task(e)),
        r"sparsity 1\.5",
    ),
    (
        "oneshot-no-data",
        lambda e: oneshot_prune(_tiny(e), "obert", 0.5),
        "task= or sampler=",
    ),
    (
        "run_recipe-foreign-folder",
        lambda e: (
            _foreign_file(e),
            run_recipe(load_recipe(str(e.recipe)), _tiny(e), _task(e), e.out),
        ),
        "not empty",
    ),
    (
        "run_recipe-bad-options",
        lambda e: run_recipe(
            load_recipe(str(e.recipe)), _tiny(e), _task(e), e.out, options=RunOptions(batch_size=0)
        ),
        r"batch_size \(--batch-size\) 0",
    ),
]


@pytest.mark.parametrize(("name", "call", "message"), PY_CASES, ids=[c[0] for c in PY_CASES])
def test_python_entry_points_raise_the_package_error(
    env: Env, name: str, call: Callable[[Env], object], message: str
) -> None:
    with pytest.raises(ObertTrainError) as info:
        call(env)
    assert re.search(message, str(info.value)), str(info.value)
    assert "\n" not in str(info.value).strip() or name.startswith("load_recipe")


def test_no_eval_needs_no_dev_file(env: Env) -> None:
    """train.md: ``--train-file`` alone with ``--no-eval`` trains (no dev file needed)."""
    args = [
        "run", str(env.recipe), "--model", str(env.model), "--task", "sst2",
        "--train-file", str(env.data / "train.tsv"), "--no-eval",
        "--output-dir", str(env.out), "--no-progress", "--batch-size", "4",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (env.out / "model.safetensors").is_file()


def test_output_dir_dot_works_in_an_empty_folder(env: Env) -> None:
    work = env.scratch("here")
    work.mkdir()
    cwd = Path.cwd()
    os.chdir(work)
    try:
        args = _run(env)
        args[args.index("--output-dir") + 1] = "."
        result = runner.invoke(app, args)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert (work / "model.safetensors").is_file()
    assert not [p for p in work.iterdir() if p.name.startswith(".") and p.is_dir()]


def test_help_is_fast_and_fits_80_columns() -> None:
    """``--help`` must not import torch/transformers and option names must not be cut."""
    import subprocess
    import sys

    code = (
        "import sys; from obert_train.cli.app import main; sys.argv=['obert-train','run','--help'];"
        "\ntry: main()\nexcept SystemExit: pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    )
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip().endswith("NOTORCH"), done.stdout[-300:]
    for option in ("--max-train-samples", "--eval-batch-size", "--output-dir", "--teacher"):
        assert option in done.stdout, done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80


def test_a_failed_final_move_keeps_the_result_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The earlier folder is put back and the finished one is kept where the message says."""
    from obert_train.checkpoint import atomic_directory
    from obert_train.errors import OutputDirError

    target = tmp_path / "sparsity-0.50"
    target.mkdir()
    (target / "old.txt").write_text("earlier result\n")
    real_replace = Path.replace

    def failing(self: Path, dest: Any) -> Path:
        if Path(dest) == target and self.name.endswith(".tmp"):  # the finished folder
            raise OSError(16, "Device or resource busy")
        return real_replace(self, dest)

    monkeypatch.setattr(Path, "replace", failing)
    with (
        pytest.raises(OutputDirError, match="it is complete in") as info,
        atomic_directory(target) as tmp,
    ):
        (tmp / "new.txt").write_text("finished result\n")
    kept = Path(re.findall(r"complete in '([^']+)'", str(info.value))[0])
    assert (kept / "new.txt").read_text() == "finished result\n"
    assert (target / "old.txt").read_text() == "earlier result\n"


def test_json_outputs_stay_valid_with_a_non_finite_value(tmp_path: Path) -> None:
    from obert_train.checkpoint import json_text

    text = json_text({"loss": float("nan"), "rows": [1.0, float("inf")]})
    assert json.loads(text) == {"loss": None, "rows": [1.0, None]}


def test_a_typo_under_an_existing_folder_is_not_sent_to_the_hub(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``runs/tecaher`` has the shape of a hub id, but ``runs/`` exists here: a local typo."""
    monkeypatch.chdir(env.tmp)
    result = runner.invoke(app, _run(env, model=Path(f"{env.model.name}/typo")))
    assert result.exit_code == 2
    assert "no such model folder" in result.output


# ---------------------------------------------------------------- the output-folder policy
# docs/train.md, "Output folders": an output folder that is, holds or lies inside an input is
# refused before any work; a refused run leaves no run.json; a folder another run holds is
# refused at once (issue 18, data loss and failing late).

COLLIDING = TINY_RECIPE.replace("end_epoch: 0.0", "end_epoch: 0.5").replace(
    "init_sparsity: 0.5", "init_sparsity: 0.1"
)
NM_UNREACHABLE = """
modifiers:
  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 1.0}
pruning_modifiers:
  - !OBSPruningModifier
    params: ["re:.*encoder.*dense.weight"]
    init_sparsity: 0.5
    final_sparsity: 0.8
    start_epoch: 0.0
    end_epoch: 0.5
    update_frequency: 0.5
    mask_type: "2:4"
    num_grads: 4
    fisher_block_size: 8
"""
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
    min_keep: 64
"""


def _recipe_file(text: str, name: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        env.scratch(name).write_text(text)

    return setup


def _earlier_run_output(env: Env) -> None:
    env.out.mkdir()
    (env.out / "NOTES.txt").write_text("mine\n")


OUTPUT_CASES = [
    Case(
        "run-output-is-the-model-with-overwrite",
        lambda e: _run(e, "--overwrite", "--output-dir", str(e.model)),
        r"is the input model's folder \(--model\)",
    ),
    Case(
        "run-output-is-the-teacher",
        lambda e: _run(e, "--teacher", str(e.model), "--output-dir", str(e.model), "--overwrite"),
        r"is the input model's folder \(--model\)",
    ),
    Case(
        "run-output-holds-the-data",
        lambda e: _run(e, "--output-dir", str(e.tmp), "--overwrite"),
        r"contains the input model's folder \(--model\)",
    ),
    Case(
        "run-output-inside-the-data",
        lambda e: _run(e, "--output-dir", str(e.data / "out")),
        r"is inside the input data \(--data-dir\)",
    ),
    Case(
        "run-colliding-pruning-steps",
        lambda e: _run(e, "--set", "update_frequency=0.01", recipe=str(e.scratch("collide.yaml"))),
        r"both land on optimizer step",
        _recipe_file(COLLIDING, "collide.yaml"),
    ),
    Case(
        "run-nm-sparsity-unreachable",
        lambda e: _run(e, recipe=str(e.scratch("nm.yaml"))),
        r"2:4",
        _recipe_file(NM_UNREACHABLE, "nm.yaml"),
    ),
    Case(
        "run-structured-min-keep-leaves-nothing",
        lambda e: _run(e, recipe=str(e.scratch("keep.yaml"))),
        r"min_keep=64 with multiple=16 leaves nothing to remove",
        _recipe_file(STRUCTURED_KEEP_ALL, "keep.yaml"),
    ),
    Case(
        "oneshot-output-is-the-model",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--output-dir", str(e.model)),
        r"is the input model's folder \(--model\)",
    ),
    Case(
        "oneshot-output-inside-the-model",
        lambda e: _oneshot(e, "--sparsity", "0.5", "--output-dir", str(e.model / "pruned")),
        r"is inside the input model's folder \(--model\)",
    ),
    Case(
        "drop-layers-output-inside-the-model",
        lambda e: _drop(e, "--keep", "0", "--output-dir", str(e.model / "small")),
        r"is inside the input model's folder \(MODEL\)",
    ),
]


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=lambda c: c.id)
def test_an_output_folder_that_is_an_input_or_a_late_failure_is_refused_up_front(
    env: Env, case: Case
) -> None:
    _check(env, case)
    assert not env.out.exists() or sorted(p.name for p in env.out.iterdir()) == []


LOCKED_CASES = [
    Case("run", lambda e: _run(e, "--overwrite"), r"is in use by this process \(PID \d+\)"),
    Case("oneshot", lambda e: _oneshot(e, "--sparsity", "0.5"), r"is in use by this process"),
    Case("drop-layers", lambda e: _drop(e, "--keep", "0", "--overwrite"), r"is in use by"),
]


@pytest.mark.parametrize("case", LOCKED_CASES, ids=lambda c: c.id)
def test_a_folder_another_run_holds_is_refused_at_once_naming_the_holder(
    env: Env, case: Case
) -> None:
    """Issue 18: a second `run --overwrite` silently replaced a running run's result."""
    from obert_core.shared import folder_lock

    env.out.mkdir()
    (env.out / "run.json").write_text("{}\n")  # the running run's files
    (env.out / "config.json").write_text("{}\n")
    with folder_lock(env.out):  # as the running run holds it
        _check(env, case)
    assert sorted(p.name for p in env.out.iterdir()) == ["config.json", "run.json"]
