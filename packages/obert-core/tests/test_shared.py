"""obert_core.shared: the facts obert-train and obert-deploy both use (one copy each)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obert_core import shared
from obert_core.shared import (
    ATTENTION_LAYOUTS,
    FFN_LAYOUTS,
    GLUE_TEXT_COLUMNS,
    _machine,
    atomic_output,
    atomic_outputs,
    atomic_write_bytes,
    atomic_write_text,
    cpu_flags,
    cpu_info,
    describe_layouts,
    glue_text_columns,
    squad_normalize_answer,
    squad_scores,
)


def test_all_is_importable() -> None:
    for name in shared.__all__:
        assert getattr(shared, name) is not None


# --- atomic writes ----------------------------------------------------------------------------


def test_atomic_write_text_creates_parents_and_uses_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "report.json"
    assert atomic_write_text(target, "héllo") == target
    assert target.read_text(encoding="utf-8") == "héllo"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old content that is longer")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_failed_block_leaves_target_and_folder_untouched(tmp_path: Path) -> None:
    target = tmp_path / "new" / "model.onnx"

    def write_then_fail() -> None:
        with atomic_output(target) as tmp:
            assert tmp.suffix == ".onnx" and tmp.parent == target.parent
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert not target.exists()
    assert not (tmp_path / "new").exists()  # created for the write, removed again


def test_block_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("keep")
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_output(target):
        pass
    assert target.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_directory_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a directory"), atomic_output(tmp_path):
        pass


def test_atomic_output_errors_are_obert_errors_and_the_builtins(tmp_path: Path) -> None:
    """Review: plain IsADirectoryError / FileNotFoundError, outside obert-core's error tree."""
    from obert_core import ObertError
    from obert_core.shared import NothingWrittenError, OutputIsFolderError

    with pytest.raises(OutputIsFolderError) as folder, atomic_output(tmp_path):
        pass
    assert isinstance(folder.value, ObertError) and isinstance(folder.value, IsADirectoryError)
    with pytest.raises(NothingWrittenError) as nothing, atomic_output(tmp_path / "out.txt"):
        pass
    assert isinstance(nothing.value, ObertError) and isinstance(nothing.value, FileNotFoundError)
    with pytest.raises(OSError, match="is a directory"):  # `except OSError` callers still work
        atomic_write_text(tmp_path, "x")


def test_atomic_outputs_all_or_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"

    def write_then_fail() -> None:
        with atomic_outputs(a, None, b) as tmps:
            assert tmps[1] is None
            for tmp in (tmps[0], tmps[2]):
                assert tmp is not None
                tmp.write_text("x")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert not a.exists() and not b.exists()
    with atomic_outputs(a, b) as tmps:
        for tmp in tmps:
            assert tmp is not None
            tmp.write_text("y")
    assert a.read_text() == b.read_text() == "y"


# --- machine ----------------------------------------------------------------------------------


def test_cpu_info_describes_this_machine() -> None:
    info = cpu_info()
    assert info.logical_cores >= 1 and 1 <= info.available_cores <= info.logical_cores
    record = info.to_dict()
    assert record["isa"] == info.isa and set(record) >= {"brand", "arch", "avx2", "vnni"}
    assert cpu_flags() == sorted(cpu_flags())
    if info.avx512:
        assert "avx512f" in cpu_flags()


def test_proc_cpuinfo_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Test CPU\nflags\t\t: fpu avx2 avx512f avx512_vnni sse4_2\n")
    monkeypatch.setattr(_machine, "Path", lambda _: fake)
    flags, brand = _machine._proc_cpuinfo()
    assert brand == "Test CPU"
    assert {"avx2", "avx512f", "avx512_vnni"} <= flags


# --- layouts ----------------------------------------------------------------------------------


def test_layouts_name_the_modules_relative_to_a_layer() -> None:
    ffn = {f.family: f.layer_paths() for f in FFN_LAYOUTS}
    assert ffn["bert"] == (("intermediate.dense",), "output.dense")
    assert ffn["distilbert"] == (("ffn.lin1",), "ffn.lin2")
    assert ffn["gated-mlp"] == (("mlp.up_proj", "mlp.gate_proj"), "mlp.down_proj")
    attention = {a.family: a.layer_paths() for a in ATTENTION_LAYOUTS}
    assert attention["bert"] == (
        ("attention.self.query", "attention.self.key", "attention.self.value"),
        "attention.output.dense",
    )
    assert attention["distilbert"][1] == "attention.out_lin"
    text = describe_layouts()
    assert "intermediate.dense -> output.dense" in text and "self_attn.o_proj" in text


def test_layouts_match_real_transformers_models() -> None:
    transformers = pytest.importorskip("transformers")
    models = {
        "bert": transformers.BertModel(
            transformers.BertConfig(
                hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
            )
        ),
        "distilbert": transformers.DistilBertModel(
            transformers.DistilBertConfig(dim=8, n_layers=1, n_heads=2, hidden_dim=16)
        ),
        "gated-mlp": transformers.LlamaModel(
            transformers.LlamaConfig(
                hidden_size=8,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                intermediate_size=16,
                vocab_size=32,
            )
        ),
    }
    for family, model in models.items():
        layer = next(n for n, _ in model.named_modules() if n.endswith(".0"))
        names = {n[len(layer) + 1 :] for n, _ in model.named_modules() if n.startswith(layer + ".")}
        ffn = next(f for f in FFN_LAYOUTS if f.family == family)
        ups, down = ffn.layer_paths()
        assert {*ups, down} <= names, (family, sorted(names))
        assert getattr(model.config, ffn.width_attr) == 16
        attention = next(a for a in ATTENTION_LAYOUTS if a.family == family)
        qkv, out = attention.layer_paths()
        assert {*qkv, out} <= names, (family, sorted(names))


# --- GLUE columns -----------------------------------------------------------------------------


def test_glue_text_columns_most_specific_first() -> None:
    assert glue_text_columns(["sentence", "label"]) == ("sentence",)
    assert glue_text_columns(["question", "sentence", "label"]) == ("question", "sentence")
    assert glue_text_columns([" sentence1", "sentence2 ", "label"]) == ("sentence1", "sentence2")
    assert glue_text_columns(["#1 String", "#2 String", "Quality"]) == ("#1 String", "#2 String")
    assert glue_text_columns(["foo", "label"]) is None
    assert all(len(c) == 2 for c in GLUE_TEXT_COLUMNS)


# --- SQuAD metric -----------------------------------------------------------------------------


def test_squad_official_normalisation_and_scores() -> None:
    assert squad_normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert squad_normalize_answer("a cat and an apple") == "cat and apple"
    assert squad_scores("the Denver Broncos", ["Denver Broncos", "Broncos"]) == (1.0, 1.0)
    em, f1 = squad_scores("Denver", ["Denver Broncos"])
    assert em == 0.0 and f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert squad_scores("x", []) == (0.0, 0.0)
    assert squad_scores("", ["a"]) == (1.0, 0.0)  # both normalise to "" (official script: EM 1)


@given(st.text(max_size=30), st.lists(st.text(max_size=30), min_size=1, max_size=4))
def test_squad_scores_bounds(prediction: str, answers: list[str]) -> None:
    em, f1 = squad_scores(prediction, answers)
    assert em in (0.0, 1.0) and 0.0 <= f1 <= 1.0
    if em == 1.0 and squad_normalize_answer(prediction):
        assert f1 == pytest.approx(1.0)
    assert squad_scores(prediction, [*answers, prediction]) >= (1.0, 0.0)


# --- the output-folder lock and the output-is-an-input check (docs/train.md) ------------------


def test_folder_lock_refuses_a_second_holder_naming_its_pid(tmp_path: Path) -> None:
    import subprocess
    import sys

    from obert_core.shared import FolderInUseError, folder_lock, folder_lock_holder

    out = tmp_path / "out"
    out.mkdir()  # an existing folder stays, empty or not
    with folder_lock(out, tool="obert-train run"):
        assert folder_lock_holder(out) == os.getpid()
        busy = rf"in use by this process \(PID {os.getpid()}"
        with pytest.raises(FolderInUseError, match=busy), folder_lock(out):
            pass
        code = (
            "import sys\nfrom obert_core.shared import folder_lock, FolderInUseError\n"
            "try:\n    with folder_lock(sys.argv[1]): print('locked')\n"
            "except FolderInUseError as e: print(e)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=True
        )
        assert f"is in use by PID {os.getpid()}" in proc.stdout
        assert isinstance(FolderInUseError("x"), OSError)
    with folder_lock(out):  # released with the block
        pass
    assert list(out.iterdir()) == []  # no lock file left in the user's folder
    assert folder_lock_holder(out) is None


@pytest.mark.parametrize(
    ("output", "how"),
    [("model", "is"), (".", "contains"), ("model/sub", "is inside"), ("data/train.tsv", "is")],
)
def test_an_output_that_is_contains_or_is_inside_an_input_is_refused(
    tmp_path: Path, output: str, how: str
) -> None:
    from obert_core.shared import OutputOverlapError, check_output_not_input

    (tmp_path / "model").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.tsv").write_text("x")
    inputs = {"--model": tmp_path / "model", "--train-file": tmp_path / "data" / "train.tsv"}
    with pytest.raises(OutputOverlapError, match=f"{how} the input"):
        check_output_not_input(tmp_path / output, inputs)
    check_output_not_input(tmp_path / "new", {**inputs, "--teacher": "bert-base-uncased"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model"]


def test_folder_lock_removes_the_folders_it_made_when_nothing_was_written(tmp_path: Path) -> None:
    from obert_core.shared import folder_lock

    with pytest.raises(RuntimeError), folder_lock(tmp_path / "a" / "b"):
        raise RuntimeError("refused after the lock")
    assert list(tmp_path.iterdir()) == []
    with folder_lock(tmp_path / "a" / "b") as out:
        (out / "kept.txt").write_text("x")
    assert (tmp_path / "a" / "b" / "kept.txt").read_text() == "x"


def test_a_failed_atomic_output_leaves_its_folder_mtime_as_it_was(tmp_path: Path) -> None:
    """Issue 18: a refused invocation leaves its output folder exactly as it was."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    os.utime(folder, ns=(1_000_000_000, 1_000_000_000))
    with pytest.raises(RuntimeError), atomic_output(folder / "model.onnx"):
        raise RuntimeError("the export failed")
    assert folder.stat().st_mtime_ns == 1_000_000_000
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_squad_doc_stride_default_and_checks() -> None:
    from obert_core import ObertError
    from obert_core.shared import squad_doc_stride

    assert squad_doc_stride(384) == 128  # run_qa.py's defaults fit
    assert squad_doc_stride(256) == 128  # 128 wherever it fits
    assert squad_doc_stride(196) == 128  # room 129: 128 fits
    assert squad_doc_stride(195) == 64  # room 128: half of it
    assert squad_doc_stride(128) == (128 - 64 - 3) // 2  # half the room of a shorter window
    assert squad_doc_stride(128, None, 10) == 57  # the room the longest question leaves
    assert squad_doc_stride(128, 60) == 60
    with pytest.raises(ObertError, match="doc_stride 61 must be < max_seq_length 128"):
        squad_doc_stride(128, 61)
    with pytest.raises(ObertError, match="leaves no room"):
        squad_doc_stride(64, None, 60)
