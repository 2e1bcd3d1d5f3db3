"""Task ``image-classification`` (issue 19, LPViT): image folders and .npz arrays, offline.

A tiny ViT (8x8 images, 2x2 patches, hidden 32, 2 layers) built in-process and a
``ViTImageProcessor`` constructed in-process; images generated in ``tmp_path``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from obert_train import (
    DataError,
    ModelError,
    RunOptions,
    load_recipe,
    load_task,
    oneshot_prune,
    resolve_target_params,
    run_recipe,
)
from obert_train.tasks.images import ImageClassificationTask

PIL = pytest.importorskip("PIL.Image")

CLASSES = ("cat", "dog", "fish")


def _processor(size: int = 8) -> ViTImageProcessor:
    return ViTImageProcessor(size={"height": size, "width": size})


def _vit(num_labels: int = 3, image_size: int = 8) -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=image_size, patch_size=2, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=num_labels,
    )  # fmt: skip
    return ViTForImageClassification(config).eval()


def _images(n: int, seed: int, size: int = 8) -> np.ndarray:
    """Class-dependent colours plus noise, so the classes are learnable."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _write_folder(root: Path, per_class: int = 4, seed: int = 0, size: int = 8) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, cls in enumerate(CLASSES):
        (root / cls).mkdir()
        for i, array in enumerate(_images(per_class, seed + k, size)):
            PIL.fromarray(array).save(root / cls / f"{i}.png")
    return root


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    _write_folder(tmp_path / "data" / "train", per_class=4, seed=0)
    _write_folder(tmp_path / "data" / "dev", per_class=2, seed=10)
    return tmp_path / "data"


def test_a_class_folder_layout_loads_with_folder_names_as_labels(image_dir: Path) -> None:
    task = load_task("image-classification", _processor(), data_dir=image_dir)
    assert isinstance(task, ImageClassificationTask)
    assert task.labels == list(CLASSES)
    assert len(task.train_features) == 12 and len(task.dev_features) == 6
    batch = task.collate(task.train_features[:5])
    assert batch["pixel_values"].shape == (5, 3, 8, 8)
    assert batch["labels"].tolist() == [0, 0, 0, 0, 1]
    # the processor's own output for the first image (rescale, normalise)
    first = np.asarray(PIL.open(image_dir / "train" / "cat" / "0.png").convert("RGB"))
    expect = _processor()(images=[first], return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(batch["pixel_values"][0], expect)
    metrics = task.evaluate(_vit(), progress=False)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["num_examples"] == 6


def test_one_folder_is_split_by_a_seed(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "all", per_class=5)
    a = load_task("image-classification", _processor(), data_dir=root, split_seed=3)
    b = load_task("image-classification", _processor(), data_dir=root, split_seed=3)
    c = load_task("image-classification", _processor(), data_dir=root, split_seed=4)
    assert len(a.train_features) == 12 and len(a.dev_features) == 3  # round(0.2 * 15)
    same = [torch.equal(x["pixel_values"], y["pixel_values"]) for x, y in zip(
        a.dev_features, b.dev_features, strict=True)]  # fmt: skip
    assert all(same)
    assert not all(
        torch.equal(x["pixel_values"], y["pixel_values"])
        for x, y in zip(a.dev_features, c.dev_features, strict=True)
    )


def test_npz_arrays_load_with_label_names(tmp_path: Path) -> None:
    images = _images(6, 0)
    np.savez(tmp_path / "train.npz", images=images, labels=np.array([0, 1, 2, 0, 1, 2]),
             label_names=np.array(list(CLASSES)))  # fmt: skip
    chw = _images(3, 1).transpose(0, 3, 1, 2)  # channels first is accepted too
    np.savez(tmp_path / "dev.npz", images=chw, labels=np.array([2, 1, 0]),
             label_names=np.array(list(CLASSES)))  # fmt: skip
    task = load_task("image-classification", _processor(), data_dir=tmp_path)
    assert isinstance(task, ImageClassificationTask)
    assert task.labels == list(CLASSES)
    assert [f["labels"] for f in task.dev_features] == [2, 1, 0]
    expect = _processor()(images=[chw[0].transpose(1, 2, 0)], return_tensors="pt")
    torch.testing.assert_close(task.dev_features[0]["pixel_values"], expect["pixel_values"][0])


def test_mixed_sizes_and_empty_class_folders_are_refused(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "mixed", per_class=2)
    PIL.fromarray(_images(1, 5, size=10)[0]).save(root / "dog" / "big.png")
    with pytest.raises(DataError, match=r"mixed sizes: .*big\.png is 10x10 .* is 8x8"):
        load_task("image-classification", _processor(), data_dir=root)
    root = _write_folder(tmp_path / "empty", per_class=2)
    (root / "zebra").mkdir()
    (root / "zebra" / "notes.txt").write_text("no images here", encoding="utf-8")
    with pytest.raises(DataError, match=r"class folder .*zebra' holds no image"):
        load_task("image-classification", _processor(), data_dir=root)
    with pytest.raises(DataError, match="do not apply to task 'image-classification'"):
        load_task("image-classification", _processor(), data_dir=root, max_seq_length=64)
    np.savez(tmp_path / "bad.npz", images=_images(2, 0), labels=np.array([0, 5]),
             label_names=np.array(["a", "b"]))  # fmt: skip
    with pytest.raises(DataError, match=r"label 5 is not an index into the 2 label_names"):
        load_task("image-classification", _processor(), train_file=tmp_path / "bad.npz",
                  need_dev=False)  # fmt: skip


def test_a_processor_whose_image_size_differs_from_the_model_is_refused(
    image_dir: Path, tmp_path: Path
) -> None:
    task = load_task("image-classification", _processor(16), data_dir=image_dir)
    with pytest.raises(ModelError, match=r"makes 16x16 images but the model takes 8x8"):
        oneshot_prune(_vit(), "magnitude", 0.5, task=task, progress=False)
    folder = tmp_path / "vit"
    _vit().save_pretrained(folder)
    with pytest.raises(ModelError, match=r"makes 16x16 images"):
        task.load_model(str(folder))


def test_oneshot_obert_blocks_with_obs_allocation_on_a_vit(image_dir: Path) -> None:
    task = load_task("image-classification", _processor(), data_dir=image_dir)
    model = _vit()
    settings = {
        "mask_type": "8x8", "allocation": "obs", "num_grads": 8, "grad_batch_size": 4,
        "fisher_block_size": 16, "damp": 1e-4,
    }  # fmt: skip
    result = oneshot_prune(model, "obert", 0.5, settings=settings, task=task, progress=False)
    params = resolve_target_params(model)
    assert len(params) == 12  # the six Linear weights of both ViT layers (default targets)
    assert result.sparsity >= 0.5
    ratios = set()
    for name, p in params.items():
        rows, cols = p.shape
        blocks = (p.detach() != 0).reshape(rows // 8, 8, cols // 8, 8)
        assert torch.all(blocks.all(3).all(1) | ~blocks.any(3).any(1)), name
        ratios.add(float((~blocks.any(3).any(1)).double().mean()))
    assert len(ratios) > 1  # per-layer ratios
    assert 0.0 <= task.evaluate(model, progress=False)["accuracy"] <= 1.0


RECIPE = """
modifiers:
  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 1.0}
  - !LPViTPruningModifier
    params: ["re:layers.*.(q_proj|k_proj|v_proj|o_proj|fc1|fc2).weight"]
    init_sparsity: 0.3
    final_sparsity: 0.5
    start_epoch: 0.0
    end_epoch: 0.5
    update_frequency: 0.5
    mask_type: 8x8
    num_grads: 2
    grad_sampler_kwargs: {batch_size: 4}
distillation_modifiers:
  - !DistillationModifier {hardness: 0.5, temperature: 2.0, distill_output_keys: [logits]}
"""


OBS_FIELDS = """    mask_type: 8x8
    allocation: obs
    num_grads: 4
    fisher_block_size: 16
    damp: 1.0e-4
"""


@pytest.mark.parametrize("method", ["lpvit", "obert"])
def test_a_gradual_run_with_distillation(image_dir: Path, tmp_path: Path, method: str) -> None:
    task = load_task("image-classification", _processor(), data_dir=image_dir)
    student, teacher = _vit(), _vit()
    recipe = RECIPE
    if method == "obert":  # oBERT with the OBS allocation
        recipe = recipe.replace("!LPViTPruningModifier", "!OBSPruningModifier").replace(
            "    mask_type: 8x8\n    num_grads: 2\n", OBS_FIELDS
        )
        assert "allocation: obs" in recipe
    result = run_recipe(
        load_recipe(recipe), student, task, tmp_path / "run", teacher=teacher,
        options=RunOptions(batch_size=4, progress=False, logging_steps=50), log=lambda _l: None,
    )  # fmt: skip
    assert "accuracy" in str(result.metrics)
    params = resolve_target_params(student)
    pruned = sum(int((p == 0).sum()) for p in params.values())
    assert pruned >= 0.5 * sum(p.numel() for p in params.values())
    loaded = ViTForImageClassification.from_pretrained(tmp_path / "run")
    for name, p in resolve_target_params(loaded).items():
        assert torch.equal(p == 0, params[name] == 0)


def test_the_oneshot_command_prunes_an_image_model_folder(image_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from obert_train.cli.app import app

    folder = tmp_path / "vit"
    _vit().save_pretrained(folder)
    _processor().save_pretrained(folder)
    out = tmp_path / "out"
    args = [
        "oneshot", "--model", str(folder), "--task", "image-classification", "--data-dir",
        str(image_dir), "--output-dir", str(out), "--no-progress", "--method", "lpvit",
        "--sparsity", "0.5", "--set", "mask_type=8x8", "--set", "num_grads=2", "--grad-batch-size", "4", "--eval",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output
    (ckpt,) = [p for p in out.iterdir() if p.is_dir()]
    model = ViTForImageClassification.from_pretrained(ckpt)
    params = resolve_target_params(model)
    (modifier,) = load_recipe(str(ckpt / "recipe.yaml")).pruning  # names the ViT's tensors
    assert set(resolve_target_params(model, modifier.settings.targets)) == set(params)
    pruned = sum(int((p == 0).sum()) for p in params.values())
    assert pruned >= 0.5 * sum(p.numel() for p in params.values())
    bare = tmp_path / "bare"
    _vit().save_pretrained(bare)  # no preprocessor_config.json
    refused = CliRunner().invoke(app, [*args[:2], str(bare), *args[3:8], str(tmp_path / "o2"),
                                       *args[9:]])  # fmt: skip
    assert refused.exit_code == 2
    assert "no preprocessor_config.json" in refused.output


def test_the_run_command_trains_an_image_model_with_its_teacher(
    image_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from obert_train.cli.app import app

    for name in ("vit", "teacher"):
        _vit().save_pretrained(tmp_path / name)
        _processor().save_pretrained(tmp_path / name)
    recipe = tmp_path / "lpvit.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    out = tmp_path / "run"
    args = [
        "run", str(recipe), "--model", str(tmp_path / "vit"), "--task", "image-classification",
        "--data-dir", str(image_dir), "--output-dir", str(out), "--batch-size", "4",
        "--teacher", str(tmp_path / "teacher"), "--no-progress",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.rindex('{\n  "output_dir"') :])
    assert summary["sparsity"] >= 0.5
    assert (out / "preprocessor_config.json").is_file()  # saved with the model


def test_npz_class_ids_keep_the_label_names_order(tmp_path: Path) -> None:
    """Ids index ``label_names`` as stored, even unsorted and with a class absent from train."""
    names = np.array(["cat", "dog", "ant"])
    np.savez(tmp_path / "train.npz", images=_images(4, 0), labels=np.array([0, 1, 0, 1]),
             label_names=names)  # fmt: skip
    np.savez(tmp_path / "dev.npz", images=_images(2, 1), labels=np.array([2, 0]),
             label_names=names)  # fmt: skip
    task = load_task("image-classification", _processor(), data_dir=tmp_path)
    assert isinstance(task, ImageClassificationTask)
    assert task.labels == ["cat", "dog", "ant"]
    assert [f["labels"] for f in task.train_features] == [0, 1, 0, 1]
    assert [f["labels"] for f in task.dev_features] == [2, 0]


def _grey_vit(channels: int = 1) -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8, patch_size=2, num_channels=channels, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=3,
    )  # fmt: skip
    return ViTForImageClassification(config).eval()


def _grey_processor() -> ViTImageProcessor:
    return ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5], image_std=[0.5])


def test_a_one_channel_vit_gets_greyscale_images(image_dir: Path) -> None:
    """Colour PNGs become Pillow's "L"; grey PNGs stay as they are; the model runs and prunes."""
    grey = np.random.default_rng(7).integers(0, 256, size=(8, 8), dtype=np.uint8)
    PIL.fromarray(grey, mode="L").save(image_dir / "train" / "fish" / "grey.png")
    task = load_task("image-classification", _grey_processor(), data_dir=image_dir)
    assert isinstance(task, ImageClassificationTask)
    assert task.num_channels == 1
    batch = task.collate(task.train_features)
    assert batch["pixel_values"].shape == (13, 1, 8, 8)
    # the oracle: Pillow's own RGB -> L conversion, rescaled and normalised to [-1, 1]
    colour = PIL.open(image_dir / "train" / "cat" / "0.png")
    expect = np.asarray(colour.convert("L"), dtype=np.float64) / 255.0 * 2.0 - 1.0
    np.testing.assert_allclose(batch["pixel_values"][0, 0].numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(  # the grey image (fish/grey.png sorts last)
        batch["pixel_values"][12, 0].numpy(), grey / 255.0 * 2.0 - 1.0, atol=1e-6
    )
    model = _grey_vit()
    assert 0.0 <= task.evaluate(model, progress=False)["accuracy"] <= 1.0
    settings = {"mask_type": "8x8", "num_grads": 2, "grad_batch_size": 4}
    oneshot_prune(model, "lpvit", 0.5, settings=settings, task=task, progress=False)


def test_the_task_follows_the_loaded_models_channels(tmp_path: Path) -> None:
    grey = np.random.default_rng(1).integers(0, 256, size=(6, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", images=grey, labels=np.array([0, 1, 2, 0, 1, 2]))
    np.savez(tmp_path / "dev.npz", images=grey[:3], labels=np.array([0, 1, 2]))
    plain = ViTImageProcessor(size={"height": 8, "width": 8}, do_normalize=False)
    task = load_task("image-classification", plain, data_dir=tmp_path)
    assert isinstance(task, ImageClassificationTask)
    assert task.num_channels == 3  # the processor's image_mean has 3 values
    assert task.train_features[0]["pixel_values"].shape == (3, 8, 8)
    folder = tmp_path / "grey-vit"
    _grey_vit().save_pretrained(folder)
    model = task.load_model(str(folder))
    assert task.num_channels == 1
    for feature, image in zip(task.train_features, grey, strict=True):
        np.testing.assert_allclose(feature["pixel_values"][0].numpy(), image[..., 0] / 255.0)
    assert task.dev_features[0]["pixel_values"].shape == (1, 8, 8)
    assert 0.0 <= task.evaluate(model, progress=False)["accuracy"] <= 1.0


def test_channel_mismatches_are_named(image_dir: Path, tmp_path: Path) -> None:
    task = load_task("image-classification", _processor(), data_dir=image_dir)
    assert isinstance(task, ImageClassificationTask)
    with pytest.raises(ModelError, match=r"images have 3 channel\(s\) but the model takes 1"):
        oneshot_prune(_grey_vit(), "magnitude", 0.5, task=task, progress=False)
    folder = tmp_path / "grey-vit"
    _grey_vit().save_pretrained(folder)
    with pytest.raises(
        DataError,
        match=r"normalises 3 channel\(s\) \(image_mean=\[0\.5, 0\.5, 0\.5\]\) but the images have 1",
    ):
        task.load_model(str(folder))
    assert task.num_channels == 3  # unchanged by the refused conversion
    four = tmp_path / "four"
    _grey_vit(4).save_pretrained(four)
    with pytest.raises(DataError, match=r"config.num_channels is 4: images can be converted to 1"):
        task.load_model(str(four))
    with pytest.raises(DataError, match=r"num_channels is 2"):
        ImageClassificationTask(_processor(), task._examples[0], [], num_channels=2)
