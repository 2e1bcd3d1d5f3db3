"""obert-deploy and obert-train on issue 19 (LPViT): the latency table and the image data.

The latency table is written by obert-deploy's bench and read by obert-train's allocator, one
format string for both (:data:`obert_core.shared.LATENCY_TABLE_FORMAT`); each library keeps its
own image reader (obert-deploy never imports obert-train), and on the same class folders and
``.npz`` files both give the same images and class names.
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


def _write_images(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    for i, name in enumerate(("ant", "bee")):
        folder = root / name
        folder.mkdir(parents=True)
        for j in range(3):
            pixels = np.full((12, 10, 3), 30 * i + j, dtype=np.uint8)
            pixels[0, 0] = (j, 2 * j, 3 * j)
            Image.fromarray(pixels).save(folder / f"{j}.png")
    return root


def test_both_image_readers_read_the_same_images_and_classes(tmp_path: Path) -> None:
    """obert-train's image task and obert-deploy's evaluation read one data set alike."""
    import numpy as np

    pytest.importorskip("PIL")
    from obert_deploy.evaluation import read_images
    from obert_train.tasks.images import read_image_arrays, read_image_folder

    folder = _write_images(tmp_path / "imgs")
    ours = read_image_folder(folder)
    theirs = read_images(folder)
    assert [e.label for e in ours] == theirs.classes
    for example, image in zip(ours, theirs.images, strict=True):
        np.testing.assert_array_equal(example.image, image)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 8, 8), dtype=np.uint8)  # N x C x H x W
    labels = np.array([2, 0, 1, 1, 0])
    for names in (None, np.array(["cat", "dog", "eel"])):
        file = tmp_path / ("named.npz" if names is not None else "ids.npz")
        extra = {} if names is None else {"label_names": names}
        np.savez(file, images=images, labels=labels, **extra)
        ours = read_image_arrays(file)
        theirs = read_images(file)
        assert [e.label for e in ours] == theirs.classes
        for example, image in zip(ours, theirs.images, strict=True):
            np.testing.assert_array_equal(example.image, image)
