"""One block-sparse Linear as ONNX (matmul | block-gather) and the latency table, vs float64 oracles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from obert_core.shared import LATENCY_TABLE_FORMAT
from obert_deploy import ObertDeployError
from obert_deploy.bench import (
    block_gather_reference,
    linear_graph,
    measure_latency_table,
    pack_block_rows,
    parse_block,
    parse_shapes,
    random_block_mask,
    write_latency_table,
)
from obert_deploy.cli import app

ort = pytest.importorskip("onnxruntime")


@st.composite
def _weights(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, int], float]:
    r = draw(st.sampled_from([1, 2, 4]))
    c = draw(st.sampled_from([1, 2, 4]))
    rows = r * draw(st.integers(1, 5))
    cols = c * draw(st.integers(1, 5))
    density = draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
    seed = draw(st.integers(0, 1000))
    weight = np.random.default_rng(seed).standard_normal((rows, cols))
    return weight * random_block_mask((rows, cols), (r, c), density, seed=seed), (r, c), density


@settings(max_examples=60, deadline=None)
@given(case=_weights())
def test_random_block_masks_keep_whole_blocks_at_the_density(
    case: tuple[np.ndarray, tuple[int, int], float],
) -> None:
    weight, (r, c), density = case
    rows, cols = weight.shape
    mask = random_block_mask((rows, cols), (r, c), density, seed=3)
    blocks = mask.reshape(rows // r, r, cols // c, c)
    # every block is all kept or all pruned
    assert np.array_equal(blocks.all(axis=(1, 3)), blocks.any(axis=(1, 3)))
    n = (rows // r) * (cols // c)
    assert int(blocks.all(axis=(1, 3)).sum()) == round(density * n)


@settings(max_examples=60, deadline=None)
@given(case=_weights(), tokens=st.integers(1, 4))
def test_the_block_gather_form_is_the_dense_product(
    case: tuple[np.ndarray, tuple[int, int], float], tokens: int
) -> None:
    weight, block, _ = case
    x = np.random.default_rng(tokens).standard_normal((tokens, weight.shape[1]))
    np.testing.assert_allclose(block_gather_reference(x, weight, block), x @ weight.T, atol=1e-12)
    idx, packed, padding = pack_block_rows(weight, block)
    assert idx.shape[0] == packed.shape[0] == weight.shape[0] // block[0]
    assert idx.shape[1] == packed.shape[1] and packed.shape[2] == block[0]
    assert 0.0 <= padding <= 1.0  # 1.0: no block kept at all


@pytest.mark.parametrize("form", ["matmul", "block-gather"])
@pytest.mark.parametrize("density", [1.0, 0.5, 0.25, 0.0])
def test_the_onnx_graph_matches_float64(form: str, density: float) -> None:
    rng = np.random.default_rng(0)
    shape, block, tokens = (64, 96), (16, 32), 7
    weight = (rng.standard_normal(shape) * random_block_mask(shape, block, density)).astype(
        np.float32
    )
    model = linear_graph(weight, tokens, form=form, block=block)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, tokens, shape[1])).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    want = x[0].astype(np.float64) @ weight.astype(np.float64).T
    assert y.shape == (1, tokens, shape[0])
    np.testing.assert_allclose(y[0], want, rtol=1e-5, atol=1e-4)


def test_bad_blocks_shapes_and_forms_are_named() -> None:
    assert parse_block("16x32") == (16, 32)
    assert parse_shapes("384x384, 1536x384,384x384") == [(384, 384), (1536, 384)]
    for bad in ("16", "0x16", "axb"):
        with pytest.raises(ObertDeployError, match=repr(bad)):
            parse_block(bad)
    with pytest.raises(ObertDeployError, match="no weight shape"):
        parse_shapes(" , ")
    with pytest.raises(ObertDeployError, match="does not divide the weight shape 64x65"):
        random_block_mask((64, 65), (16, 16), 0.5)
    with pytest.raises(ObertDeployError, match=r"density 1\.5"):
        random_block_mask((64, 64), (16, 16), 1.5)
    with pytest.raises(ObertDeployError, match="unknown form 'bsr'"):
        linear_graph(np.zeros((4, 4), np.float32), 2, form="bsr")
    with pytest.raises(ObertDeployError, match="needs the block"):
        linear_graph(np.zeros((4, 4), np.float32), 2, form="block-gather")


def test_a_measured_table_is_what_obert_train_reads(tmp_path: Path) -> None:
    table = measure_latency_table(
        [(32, 64), (64, 32)], [0.5, 0.25], (16, 16), tokens=5, rounds=2, iterations=2, warmup=1
    )
    assert table["format"] == LATENCY_TABLE_FORMAT and table["unit"] == "ms"
    assert list(table["layers"]) == ["32x64", "64x32"]
    for curve in table["layers"].values():
        assert list(curve) == ["1.0", "0.5", "0.25"]
        assert all(v > 0 for v in curve.values())
    out = write_latency_table(table, tmp_path / "table.json")
    assert json.loads(out.read_text())["layers"] == table["layers"]
    with pytest.raises(ObertDeployError, match="not a latency table"):
        write_latency_table({"format": "other"}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(ObertDeployError, match=r"densities \[0.0\]"):
        measure_latency_table([(32, 32)], [0.0], (16, 16))
    with pytest.raises(ObertDeployError, match="unknown engine"):
        measure_latency_table([(32, 32)], [0.5], (16, 16), engine="tvm")


def test_cli_latency_table(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "t.json"
    args = ["latency-table", str(out), "--shapes", "32x32", "--densities", "0.5"]
    args += ["--block", "16x16", "--tokens", "4", "--rounds", "1", "--iterations", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["layers"]["32x32"].keys() == {"1.0", "0.5"}
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "already exists" in result.output
    bad = ["latency-table", str(tmp_path / "u.json"), "--shapes", "32x32", "--densities", "a"]
    result = runner.invoke(app, bad)
    assert result.exit_code == 2 and "--densities 'a'" in result.output
    assert not (tmp_path / "u.json").exists()
