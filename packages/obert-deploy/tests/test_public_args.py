"""Public functions and configs check their argument types first (issue 18).

A wrong type is an :class:`~obert_deploy.ArgumentError` (also a ``TypeError``) naming the
function or config, the argument and the value, before any file is read; never a comparison
``TypeError`` from deep inside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import obert_deploy as od

CASES: list[tuple[str, Callable[[], Any], str]] = [
    ("ExportConfig seq_len", lambda: od.ExportConfig(seq_len="128"), "seq_len='128'"),
    ("ExportConfig opset", lambda: od.ExportConfig(opset="14"), "opset='14'"),
    ("ExportConfig verify", lambda: od.ExportConfig(verify="yes"), "verify='yes'"),
    ("QATConfig steps", lambda: od.QATConfig(steps="5"), "steps='5'"),
    ("QATConfig learning_rate", lambda: od.QATConfig(learning_rate="1e-5"), "learning_rate="),
    ("BenchConfig batch_size", lambda: od.BenchConfig(batch_size="1"), "batch_size='1'"),
    ("DynamicInt8Config bits", lambda: od.DynamicInt8Config(embedding_bits="8"), "embedding_bits"),
    ("export_onnx output", lambda: od.export_onnx("ck", 3), "output=3"),
    ("quantize_onnx model", lambda: od.quantize_onnx(3, "out.onnx"), "model=3"),
    ("size_report path", lambda: od.size_report(3), "path=3"),
    ("size_report gzip_level", lambda: od.size_report("m.onnx", gzip_level="9"), "gzip_level='9'"),
    ("evaluate models", lambda: od.evaluate("ck", "m.onnx"), "models='m.onnx'"),
    ("evaluate seq_len", lambda: od.evaluate("ck", ["m.onnx"], seq_len="128"), "seq_len='128'"),
    ("evaluate max_samples", lambda: od.evaluate("ck", ["m.onnx"], max_samples=2.5), "max_samples"),
    ("load_checkpoint", lambda: od.load_checkpoint(3, "sequence-classification"), "checkpoint=3"),
    ("read_glue_tsv path", lambda: od.read_glue_tsv(None), "path=None"),
    ("qat_export output", lambda: od.qat_export("ck", 3, []), "output=3"),
    ("benchmark model", lambda: od.benchmark(3), "model=3"),
]


@pytest.mark.parametrize(("call", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wrong_argument_type_is_named(call: Callable[[], Any], named: str) -> None:
    """Each public function or config refuses a wrong type naming it, as a TypeError too."""
    with pytest.raises(od.ArgumentError, match=r"^\w+: ") as info:
        call()
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, od.ObertDeployError)
    assert named in str(info.value)


def test_number_as_text_hint() -> None:
    """A number given as a string says to write it without quotes."""
    with pytest.raises(od.ArgumentError, match="seq_len=128 without quotes"):
        od.ExportConfig(seq_len="128")


def test_values_of_the_right_type_keep_their_checks() -> None:
    """A right type out of range is still the ValueError it was."""
    with pytest.raises(od.ObertDeployError, match=r"batch_size \(0\) must be >= 1"):
        od.ExportConfig(batch_size=0)


RANGES: list[tuple[str, Callable[[], Any], str]] = [
    ("size_report gzip_level 0", lambda: od.size_report("m.onnx", gzip_level=0), "gzip_level=0"),
    ("size_report gzip_level 10", lambda: od.size_report("m.onnx", gzip_level=10), "in 1..9"),
    ("evaluate max_samples 0", lambda: od.evaluate("ck", ["m.onnx"], max_samples=0), ">= 1"),
    ("evaluate threads 0", lambda: od.evaluate("ck", ["m.onnx"], threads=0), "threads=0"),
    ("read_glue_tsv max_samples 0", lambda: od.read_glue_tsv("x.tsv", max_samples=0), ">= 1"),
]


@pytest.mark.parametrize(("call", "named"), [c[1:] for c in RANGES], ids=[c[0] for c in RANGES])
def test_out_of_range_scalars_are_named_first(call: Callable[[], Any], named: str) -> None:
    """An integer out of range is a ValueError naming it, before any file is looked at."""
    with pytest.raises(od.ObertDeployError, match=r"^\w+: \w+=") as info:
        call()
    assert not isinstance(info.value, TypeError)
    assert named in str(info.value)
