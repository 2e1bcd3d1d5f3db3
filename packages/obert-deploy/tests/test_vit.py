"""Image classifiers (ViT): export with ``pixel_values``, bench on image inputs, evaluate accuracy.

A tiny ``ViTConfig`` model built in-process (offline), with one 8x8 block of a Linear pruned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from obert_deploy import (
    BenchConfig,
    ExportConfig,
    ObertDeployError,
    ShapeMismatchError,
    benchmark,
    evaluate,
    export_onnx,
)
from obert_deploy.bench import OnnxInput, check_input_shapes, make_inputs, onnx_inputs
from obert_deploy.bench._inputs import load_onnx
from obert_deploy.cli import app
from obert_deploy.evaluation import read_images

transformers = pytest.importorskip("transformers")

IMAGE = 16
LABELS = ["cat", "dog", "eel"]


def _tiny_vit() -> transformers.ViTForImageClassification:
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=IMAGE,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        fc1 = dict(model.named_modules())["vit.layers.0.mlp.fc1"]
        fc1.weight[8:16, 0:8] = 0  # one pruned 8x8 block
    return model


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("vit")
    _tiny_vit().save_pretrained(folder)
    processor = transformers.ViTImageProcessor(
        size={"height": IMAGE, "width": IMAGE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vit_onnx(tmp_path_factory: pytest.TempPathFactory, vit_checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("vit_onnx") / "vit.onnx"
    report = export_onnx(vit_checkpoint, out, ExportConfig(task="image-classification"))
    assert report.input_shapes == {"pixel_values": ["batch", 3, IMAGE, IMAGE]}
    assert report.output_names == ["logits"]
    # the parity check ran on two batch sizes and passed
    assert report.max_abs_diff["logits"] < 1e-4
    pruned = report.pruned_weights
    assert [row.name for row in pruned] == ["vit.layers.0.mlp.fc1.weight"]
    assert pruned[0].same_zeros
    return out


def _dev_npz(path: Path, n: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 20, 20, 3), dtype=np.uint8)
    labels = rng.integers(0, len(LABELS), size=n)
    np.savez(path, images=images, labels=labels, label_names=np.array(LABELS))
    return path


def test_export_takes_pixel_values_with_a_dynamic_batch(vit_onnx: Path) -> None:
    inputs = onnx_inputs(load_onnx(vit_onnx, load_weights=False))
    assert [(i.name, i.shape[1:]) for i in inputs] == [("pixel_values", (3, IMAGE, IMAGE))]
    assert not isinstance(inputs[0].shape[0], int)


def test_static_export_fixes_the_batch(tmp_path: Path) -> None:
    out = tmp_path / "static.onnx"
    config = ExportConfig(task="image-classification", static_shapes=True, batch_size=2)
    report = export_onnx(_tiny_vit(), out, config)
    assert report.input_shapes == {"pixel_values": [2, 3, IMAGE, IMAGE]}
    inputs = onnx_inputs(load_onnx(out, load_weights=False))
    with pytest.raises(ShapeMismatchError, match="--batch-size 2"):
        check_input_shapes(inputs, 1, 128, model_name="static.onnx")


def test_bench_feeds_images_of_the_exported_shape(vit_onnx: Path) -> None:
    inputs = onnx_inputs(load_onnx(vit_onnx, load_weights=False))
    feed = make_inputs(inputs, 3, 128)
    assert feed["pixel_values"].shape == (3, 3, IMAGE, IMAGE)
    assert feed["pixel_values"].dtype == np.float32
    config = BenchConfig(batch_size=2, threads=1, iterations=3, warmup=1)
    result = benchmark(vit_onnx, config)
    assert result.latency_ms["p50"] > 0
    assert result.weight_sparsity > 0
    assert result.seq_len == 0  # no sequence axis; the table prints "-"
    from obert_deploy.bench import results_to_markdown

    assert "| 2 | - |" in results_to_markdown([result])


def test_an_image_input_with_a_dynamic_size_is_refused() -> None:
    spec = OnnxInput("pixel_values", np.dtype(np.float32), ("batch", 3, "h", "w"))
    with pytest.raises(ShapeMismatchError, match=r"dynamic axes \[2, 3\]"):
        check_input_shapes([spec], 1, 128, model_name="m.onnx")


def test_evaluate_images_from_an_npz(tmp_path: Path, vit_checkpoint: Path, vit_onnx: Path) -> None:
    data = _dev_npz(tmp_path / "dev.npz")
    report = evaluate(vit_checkpoint, [vit_onnx], task="image-classification", data=data, threads=1)
    torch_result, onnx_result = report.results
    assert report.num_examples == 12 and report.data == str(data)
    assert onnx_result.metrics["accuracy"] == torch_result.metrics["accuracy"]
    assert onnx_result.agreement == 1.0
    assert onnx_result.max_abs_diff is not None and onnx_result.max_abs_diff < 1e-4
    # the accuracy is that of the model's own predictions on the processed images
    model = transformers.ViTForImageClassification.from_pretrained(vit_checkpoint).eval()
    processor = transformers.ViTImageProcessor.from_pretrained(vit_checkpoint)
    with np.load(data) as arrays:
        pixels = processor(images=list(arrays["images"]), return_tensors="pt")["pixel_values"]
        labels = arrays["labels"]
    with torch.no_grad():
        predicted = model(pixel_values=pixels).logits.argmax(-1).numpy()
    assert torch_result.metrics["accuracy"] == pytest.approx(float(np.mean(predicted == labels)))
    assert "seq" not in report.to_markdown().splitlines()[0]


def test_read_images_from_class_folders(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "imgs"
    for i, name in enumerate(("dog", "cat")):
        (root / "dev" / name).mkdir(parents=True)
        for j in range(2):
            pixels = np.full((20, 20, 3), 40 * i + j, dtype=np.uint8)
            Image.fromarray(pixels).save(root / "dev" / name / f"{j}.png")
    (root / "dev" / "cat" / "notes.txt").write_text("not an image")
    data = read_images(root)
    assert data.classes == ["cat", "cat", "dog", "dog"]
    assert data.source == str(root / "dev")
    assert read_images(root, max_samples=3).classes == ["cat", "cat", "dog"]


def test_image_data_errors(tmp_path: Path, vit_checkpoint: Path, vit_onnx: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ObertDeployError, match="holds no image"):
        read_images(tmp_path / "empty")
    np.savez(tmp_path / "bad.npz", pictures=np.zeros((2, 4, 4, 3)))
    with pytest.raises(ObertDeployError, match="has no"):
        read_images(tmp_path / "bad.npz")
    np.savez(
        tmp_path / "names.npz",
        images=np.zeros((2, 20, 20, 3), dtype=np.uint8),
        labels=np.array([0, 1]),
        label_names=np.array(["cat", "owl"]),
    )
    with pytest.raises(ObertDeployError, match="class 'owl' is not one of the model's 3 labels"):
        evaluate(
            vit_checkpoint, [vit_onnx], task="image-classification", data=tmp_path / "names.npz"
        )
    with pytest.raises(ObertDeployError, match="no default dataset"):
        evaluate(vit_checkpoint, [vit_onnx], task="image-classification")


def test_a_processor_of_another_size_is_refused(
    tmp_path: Path, vit_checkpoint: Path, vit_onnx: Path
) -> None:
    other = tmp_path / "processor"
    transformers.ViTImageProcessor(size={"height": 24, "width": 24}).save_pretrained(other)
    with pytest.raises(ObertDeployError, match=r"shape \[3, 24, 24\].*takes \[3, 16, 16\]"):
        evaluate(
            vit_checkpoint,
            [vit_onnx],
            task="image-classification",
            data=_dev_npz(tmp_path / "dev.npz"),
            tokenizer=other,
        )


def test_cli_export_and_evaluate_an_image_classifier(tmp_path: Path, vit_checkpoint: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.onnx"
    result = runner.invoke(
        app, ["export", str(vit_checkpoint), "-o", str(out), "--task", "image-classification"]
    )
    assert result.exit_code == 0, result.output
    assert "pixel_values" in result.output
    data = _dev_npz(tmp_path / "dev.npz")
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(vit_checkpoint),
            str(out),
            "--task",
            "image-classification",
            "--data",
            str(data),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "100.00 %" in result.output  # agreement with PyTorch
