"""The latency table: written by obert-deploy's bench, read by obert-train's allocator (issue 19).

One format string for both, :data:`obert_core.shared.LATENCY_TABLE_FORMAT`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("obert_train")


def test_a_table_written_by_obert_deploy_is_read_by_obert_train(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import obert_core.shared as shared
    import obert_train.pruning.blocks as blocks
    from obert_deploy.cli import app
    from obert_train import load_latency_table

    assert blocks.LATENCY_TABLE_FORMAT is shared.LATENCY_TABLE_FORMAT
    out = tmp_path / "latency.json"
    args = ["latency-table", str(out), "--shapes", "64x64,256x64,64x256"]
    args += ["--densities", "0.75,0.5,0.25", "--block", "16x16", "--tokens", "5"]
    args += ["--rounds", "1", "--iterations", "2", "--warmup", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = load_latency_table(out)
    assert set(table) == {(64, 64), (256, 64), (64, 256)}
    for curve in table.values():
        assert set(curve) == {1.0, 0.75, 0.5, 0.25}
        assert all(ms > 0 for ms in curve.values())
    shapes = {"layer.fc1.weight": (256, 64), "layer.fc2.weight": (64, 256)}
    assert blocks.check_latency_table(out, shapes) == table
    with pytest.raises(ValueError, match=r"no entry for layer\.head\.weight of shape 10x64"):
        blocks.check_latency_table(out, {"layer.head.weight": (10, 64)})
