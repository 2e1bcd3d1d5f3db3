"""RxC block masks (LPViT's semi-structured blocks, issue 19) through the pruning lifecycle.

The mask type ``"16x16"`` is accepted wherever mask types are (settings, recipes, ``--set``,
``oneshot``); oBERT's block step equals obert-core's reference (``obert_core.blocks``: the block
saliency and the joint block update) on the same inverse Fisher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from transformers import BertForSequenceClassification

import obert_core.blocks as ob
from obert_train import (
    ClassificationTask,
    MagnitudePruning,
    MaskState,
    MethodSettings,
    MovementPruning,
    ObertSettings,
    RecipeError,
    StepContext,
    TargetError,
    create_method,
    load_recipe,
    oneshot_prune,
    parse_sets,
    resolve_target_params,
)


def _aligned(mask: torch.Tensor, r: int, c: int) -> bool:
    rows, cols = mask.shape
    blocks = mask.reshape(rows // r, r, cols // c, c)
    return bool(torch.all(blocks.all(3).all(1) | ~blocks.any(3).any(1)))


def test_settings_accept_rxc() -> None:
    cfg = MethodSettings(mask_type="16X8")
    assert cfg.mask_type == "16x8"  # written back in one spelling
    assert cfg.block == (16, 8) and cfg.group_size == 8 and cfg.nm is None
    assert MethodSettings(mask_type="2:4").block is None
    assert ObertSettings(mask_type="16x16", fisher_block_size=32).block == (16, 16)
    with pytest.raises(ValidationError, match="at least 1x1"):
        MethodSettings(mask_type="0x16")
    with pytest.raises(ValidationError, match="divisible by the block width 16"):
        ObertSettings(mask_type="16x16", fisher_block_size=50)
    with pytest.raises(RecipeError, match="'RxC' like '16x16'"):
        create_method("magnitude", mask_type="16by16")


def test_magnitude_removes_whole_blocks_by_their_squared_norm() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 12)
    w[4:8, 4:8] *= 0.01  # the block (1, 1) is the smallest
    params = {"w": torch.nn.Parameter(w.clone()), "v": torch.nn.Parameter(torch.randn(4, 4))}
    state = MaskState(params)
    MagnitudePruning(mask_type="4x4").prune(params, state, 0.25, StepContext())
    keep = state["w"].reshape(8, 12)
    assert _aligned(keep, 4, 4) and _aligned(state["v"].reshape(4, 4), 4, 4)
    # global: 7 blocks of 16, round(0.25 * 7) = 2 blocks go, the two of least squared norm
    norms = {
        ("w", i, j): float(w[4 * i : 4 * i + 4, 4 * j : 4 * j + 4].square().sum())
        for i in range(2)
        for j in range(3)
    }
    norms[("v", 0, 0)] = float(params["v"].detach().square().sum())
    gone = sorted(norms, key=norms.__getitem__)[:2]
    assert ("w", 1, 1) in gone
    for name, i, j in norms:
        m = keep if name == "w" else state["v"].reshape(4, 4)
        assert bool(m[4 * i, 4 * j]) == ((name, i, j) not in gone)
    assert (params["w"].detach()[~keep] == 0).all()


def test_movement_ranks_blocks_by_their_summed_score() -> None:
    gen = torch.Generator().manual_seed(0)
    params = {"w": torch.nn.Parameter(torch.randn(4, 6, generator=gen))}
    method = MovementPruning(mask_type="2x3")
    state = MaskState(params)
    method.prepare(params, state, StepContext())
    params["w"].grad = torch.randn(4, 6, generator=gen)
    method.after_backward(params, state)
    method.prune(params, state, 0.5, StepContext())
    keep = state["w"].reshape(4, 6)
    assert _aligned(keep, 2, 3)
    block_scores = method.scores["w"].reshape(2, 2, 2, 3).sum((1, 3)).reshape(-1)
    lowest = set(torch.argsort(block_scores)[:2].tolist())
    assert {i for i in range(4) if not bool(keep[2 * (i // 2), 3 * (i % 2)])} == lowest


def test_block_masks_never_regrow_a_pruned_weight() -> None:
    params = {"w": torch.nn.Parameter(torch.randn(4, 4))}
    with torch.no_grad():
        params["w"][0, 0] = 0.0  # an earlier unstructured zero inside a block
    state = MaskState(params)
    state.update({"w": (params["w"].detach() != 0).reshape(-1)})
    MagnitudePruning(mask_type="2x2", global_sparsity=False).prune(
        params, state, 0.25, StepContext()
    )
    assert not bool(state["w"][0])  # still pruned, whatever block (0, 0) scored
    assert int((~state["w"]).reshape(2, 2, 2, 2).all(3).all(1).sum()) == 1  # one whole block


@pytest.mark.parametrize("global_sparsity", [False, True])
def test_obert_block_step_equals_the_core_reference(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask, global_sparsity: bool
) -> None:
    r, c, bsz = 8, 8, 16
    start = {n: p.detach().clone() for n, p in resolve_target_params(tiny_bert).items()}
    cache: dict[str, dict[str, torch.Tensor]] = {}
    settings = {
        "num_grads": 8,
        "grad_batch_size": 4,
        "fisher_block_size": bsz,
        "damp": 1e-4,
        "mask_type": f"{r}x{c}",
        "global_sparsity": global_sparsity,
    }
    result = oneshot_prune(
        tiny_bert, "obert", 0.5, settings=settings, task=task, progress=False, fisher_cache=cache
    )
    assert result.sparsity == pytest.approx(0.5)
    finvs = next(v for k, v in cache.items() if k.startswith("finv"))
    params = resolve_target_params(tiny_bert)
    # m = 8 < B = 16: the step keeps the gradients (LowRankFisher); compare on its explicit inverse
    explicit = {n: f.inverse() if hasattr(f, "inverse") else f.double() for n, f in finvs.items()}
    sal = {n: ob.obs_block_saliency(start[n].double(), explicit[n], (r, c)) for n in start}
    if global_sparsity:  # one threshold over every block of every tensor
        flat = torch.cat([s.reshape(-1) for s in sal.values()])
        cut = torch.sort(flat).values[round(0.5 * flat.numel()) - 1]
        ratios = {n: float((s <= cut).double().mean()) for n, s in sal.items()}
    else:
        ratios = dict.fromkeys(start, 0.5)
    for name, w0 in start.items():
        keep = ob.block_keep_mask(sal[name], ratios[name], (r, c))
        got = params[name].detach()
        assert _aligned(got != 0, r, c)
        torch.testing.assert_close(got != 0, keep)
        expect = ob.obs_block_update(w0.double(), explicit[name], keep, (r, c))
        np.testing.assert_allclose(got.double().numpy(), expect.numpy(), atol=2e-5, rtol=1e-4)


def test_shapes_the_blocks_do_not_fit_are_refused_before_any_work(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    with pytest.raises(TargetError, match=r"query\.weight of shape \(32, 32\) is not a whole"):
        oneshot_prune(tiny_bert, "magnitude", 0.5, settings={"mask_type": "24x8"})
    with pytest.raises(TargetError, match="does not divide the row length 32"):
        oneshot_prune(
            tiny_bert,
            "obert",
            0.5,
            settings={"mask_type": "8x8", "fisher_block_size": 48, "num_grads": 8},
            task=task,
        )
    with pytest.raises(TargetError, match="2-D weight"):
        oneshot_prune(
            torch.nn.Sequential(torch.nn.LayerNorm(8)),
            "magnitude",
            0.5,
            settings={"mask_type": "2x2", "targets": ["weight"]},
        )
    assert all(bool((p != 0).all()) for p in resolve_target_params(tiny_bert).values())


RECIPE = """\
modifiers:
  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 2.0}
pruning_modifiers:
  - !GMPruningModifier
    params: ["re:bert.encoder.layer.*.attention.self.query.weight"]
    init_sparsity: 0.5
    final_sparsity: 0.75
    start_epoch: 0.0
    end_epoch: 1.0
    update_frequency: 0.5
    mask_type: MASK
"""


def test_recipes_and_set_take_rxc() -> None:
    for written, expect in (("16x16", "16x16"), ("[16, 8]", "16x8"), ("[1, 4]", "block4")):
        recipe = load_recipe(RECIPE.replace("MASK", written))
        assert recipe.pruning[0].settings.mask_type == expect
    sets = parse_sets(["mask_type=32x32"])
    assert sets == {"mask_type": "32x32"}
    recipe = load_recipe(RECIPE.replace("MASK", "unstructured"), sets)
    assert recipe.pruning[0].settings.mask_type == "32x32"
    with pytest.raises(RecipeError, match="mask_type"):
        load_recipe(RECIPE.replace("MASK", "16x0"))


def test_oneshot_command_takes_mask_type_rxc(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification
    from typer.testing import CliRunner

    from obert_train.cli.app import app

    runner = CliRunner()
    base = ["oneshot", "--model", str(tiny_model_dir), "--task", "sst2", "--data-dir"]
    out = tmp_path / "out"
    args = [*base, str(sst2_dir), "--output-dir", str(out), "--no-progress", "--method"]
    result = runner.invoke(app, [*args, "magnitude", "--sparsity", "0.5", "--mask-type", "8x8"])
    assert result.exit_code == 0, result.output
    (ckpt,) = [p for p in out.iterdir() if p.is_dir()]
    (modifier,) = load_recipe(str(ckpt / "recipe.yaml")).pruning
    assert modifier.settings.mask_type == "8x8"
    model = AutoModelForSequenceClassification.from_pretrained(ckpt)
    for p in resolve_target_params(model).values():
        assert _aligned(p.detach() != 0, 8, 8)
    refused = tmp_path / "refused"
    bad = [*base, str(sst2_dir), "--output-dir", str(refused), "--no-progress", "--method"]
    result = runner.invoke(app, [*bad, "magnitude", "--sparsity", "0.5", "--mask-type", "24x8"])
    assert result.exit_code == 2
    assert "error:" in result.output and "(32, 32) is not a whole number of 24x8" in result.output
    assert not refused.exists()
