"""The pruning lifecycle shared by every method: masks, magnitude, movement, one-shot, registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch
from transformers import BertForSequenceClassification

from obert_train import (
    METHODS,
    ClassificationTask,
    ConstantPruning,
    MagnitudePruning,
    MaskState,
    MethodSettings,
    MovementPruning,
    ObertPruning,
    ObertTrainError,
    PruningMethod,
    RecipeError,
    StepContext,
    create_method,
    oneshot_prune,
    register_method,
    resolve_target_params,
)
from obert_train.pruning.method import select_masks
from obert_train.pruning.registry import method_for_tag

OBERT = {"num_grads": 8, "grad_batch_size": 4, "fisher_block_size": 16}


def _params(*shapes: tuple[int, ...], seed: int = 0) -> dict[str, torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return {
        f"t{i}": torch.nn.Parameter(torch.randn(*shape, generator=gen))
        for i, shape in enumerate(shapes)
    }


def _copy(model: BertForSequenceClassification) -> BertForSequenceClassification:
    clone = BertForSequenceClassification(model.config)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    return clone


# --------------------------------------------------------------------------- MaskState


def test_masks_start_from_the_zeros_of_the_weights() -> None:
    params = _params((3, 4), (5,))
    with torch.no_grad():
        params["t0"][0, :2] = 0
    state = MaskState(params)
    assert list(state) == ["t0", "t1"]
    assert len(state) == 2
    assert state["t0"].shape == (12,)
    assert state["t0"].dtype == torch.bool
    assert torch.equal(state["t0"], (params["t0"] != 0).reshape(-1))
    assert bool(state["t1"].all())
    assert state.sparsity() == pytest.approx(2 / 17)
    assert state.tensor_sparsity() == pytest.approx({"t0": 2 / 12, "t1": 0.0})
    assert state.max_tensor_sparsity() == pytest.approx(2 / 12)
    assert dict(state.items()).keys() == {"t0", "t1"}


def test_update_zeroes_newly_pruned_weights_and_refuses_regrowth() -> None:
    params = _params((2, 4))
    before = params["t0"].detach().clone()
    state = MaskState(params)
    first = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    state.update({"t0": first})
    w = params["t0"].detach().reshape(-1)
    assert torch.all(w[~first] == 0)
    assert torch.equal(w[first], before.reshape(-1)[first])  # kept weights are untouched
    with pytest.raises(ObertTrainError, match="would regrow 1 pruned weights"):
        state.update({"t0": torch.tensor([1, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)})
    assert torch.equal(state["t0"], first)  # a refused update changes nothing
    with pytest.raises(ObertTrainError, match="has 7 entries"):
        state.update({"t0": torch.ones(7, dtype=torch.bool)})
    state.update({"t0": first.reshape(2, 4)})  # same mask in the tensor's shape is fine
    assert torch.equal(state["t0"], first)


def test_apply_zeroes_the_pruned_weights_again() -> None:
    """After an optimizer step moved pruned weights, apply() sets them back to exactly 0."""
    params = _params((4, 4))
    state = MaskState(params)
    mask = torch.rand(16, generator=torch.Generator().manual_seed(1)) > 0.5
    state.update({"t0": mask})
    with torch.no_grad():
        params["t0"].add_(1.0)  # an optimizer step touches every weight
    kept = params["t0"].detach().reshape(-1)[mask].clone()
    state.apply()
    w = params["t0"].detach().reshape(-1)
    assert torch.all(w[~mask] == 0)
    assert torch.equal(w[mask], kept)


def test_a_view_writes_its_updates_through_to_the_parent() -> None:
    params = _params((2, 4), (8,), (4,))
    parent = MaskState(params)
    view = parent.view(["t1", "t2"])
    assert list(view) == ["t1", "t2"]
    new = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1], dtype=torch.bool)
    view.update({"t1": new})
    assert torch.equal(parent["t1"], new)
    assert torch.all(params["t1"].detach()[~new] == 0)
    assert view.sparsity() == pytest.approx(2 / 12)  # measured over the view's own tensors
    assert parent.sparsity() == pytest.approx(2 / 20)
    assert bool(parent["t0"].all())
    # The parent refuses regrowth the view would cause as well.
    with pytest.raises(ObertTrainError, match="regrow"):
        view.update({"t1": torch.ones(8, dtype=torch.bool)})
    # Loading a view's state updates the parent too.
    saved = {"t1": new, "t2": torch.tensor([1, 0, 1, 0], dtype=torch.bool)}
    other = MaskState(_params((2, 4), (8,), (4,), seed=3))
    other_view = other.view(["t1", "t2"])
    other_view.load_state_dict(saved)
    assert torch.equal(other["t2"], saved["t2"])
    assert torch.all(other.params["t2"].detach()[~saved["t2"]] == 0)
    assert bool(other["t0"].all())


def test_gradient_hooks_zero_the_gradients_of_pruned_weights() -> None:
    params = _params((3, 4))
    p = params["t0"]
    state = MaskState(params)
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1], dtype=torch.bool)
    state.update({"t0": mask})
    state.mask_gradients()
    state.mask_gradients()  # idempotent
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    (x @ p.T).square().sum().backward()
    assert p.grad is not None
    grad = p.grad.reshape(-1)
    assert torch.all(grad[~mask] == 0)
    assert bool((grad[mask] != 0).all())
    # The hook reads the current masks: a later update is masked without new hooks.
    later = mask.clone()
    later[0] = False
    state.update({"t0": later})
    p.grad = None
    (x @ p.T).square().sum().backward()
    assert p.grad is not None
    assert torch.all(p.grad.reshape(-1)[~later] == 0)  # type: ignore[unreachable]
    state.remove_hooks()
    with torch.no_grad():
        p.add_(1.0)  # make the pruned weights' gradients non-zero again
    p.grad = None
    (x @ p.T).square().sum().backward()
    assert p.grad is not None
    assert bool((p.grad.reshape(-1)[~later] != 0).any())  # no hooks: nothing masked


def test_state_dict_round_trip() -> None:
    params = _params((2, 4), (6,))
    state = MaskState(params)
    state.update(
        {
            "t0": torch.tensor([1, 0, 1, 0, 1, 1, 0, 1], dtype=torch.bool),
            "t1": torch.tensor([0, 1, 1, 1, 0, 1], dtype=torch.bool),
        }
    )
    saved = state.state_dict()
    assert all(m.device.type == "cpu" and m.dtype == torch.bool for m in saved.values())
    saved["t0"][0] = False  # a copy: editing it does not touch the live masks
    assert bool(state["t0"][0])
    saved = state.state_dict()
    dense = _params((2, 4), (6,), seed=5)
    restored = MaskState(dense)
    restored.load_state_dict(saved)
    for name in saved:
        assert torch.equal(restored[name], saved[name])
        assert torch.all(dense[name].detach().reshape(-1)[~saved[name]] == 0)
    assert restored.sparsity() == state.sparsity()
    with pytest.raises(ObertTrainError, match="missing"):
        restored.load_state_dict({"t0": saved["t0"]})
    with pytest.raises(ObertTrainError, match="has 5 entries"):
        restored.load_state_dict({"t0": saved["t0"], "t1": torch.ones(5, dtype=torch.bool)})


# --------------------------------------------------------------------------- magnitude


def test_magnitude_prunes_the_smallest_weights_and_groups() -> None:
    params = {
        "w": torch.nn.Parameter(torch.tensor([[0.5, -0.1, 2.0, -3.0], [0.2, 0.3, -0.05, 1.0]]))
    }
    state = MaskState(params)
    MagnitudePruning().prune(params, state, 0.5, StepContext())
    assert state["w"].tolist() == [True, False, True, True, False, False, False, True]
    assert params["w"].detach().tolist() == [[0.5, 0.0, 2.0, -3.0], [0.0, 0.0, 0.0, 1.0]]
    # block4: one score per 4 consecutive weights, the smaller squared norm goes.
    params = {
        "w": torch.nn.Parameter(torch.tensor([[0.5, -0.1, 2.0, -3.0], [0.2, 0.3, -0.05, 1.0]]))
    }
    state = MaskState(params)
    MagnitudePruning(mask_type="block4").prune(params, state, 0.5, StepContext())
    assert state["w"].tolist() == [True] * 4 + [False] * 4


# --------------------------------------------------------------------------- movement


def test_movement_scores_are_minus_the_summed_weight_times_gradient() -> None:
    params = _params((2, 3), (4,))
    method = MovementPruning()
    state = MaskState(params)
    method.prepare(params, state, StepContext())
    expected = {n: torch.zeros(p.numel()) for n, p in params.items()}
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        for name, p in params.items():
            p.grad = torch.randn(p.shape, generator=gen)
            # brute force, one weight at a time
            for i in range(p.numel()):
                expected[name][i] -= float(p.detach().reshape(-1)[i]) * float(p.grad.reshape(-1)[i])
        method.after_backward(params, state)
        with torch.no_grad():  # the weights move between backward passes
            for p in params.values():
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    assert method.updates == 3
    for name in params:
        torch.testing.assert_close(method.scores[name], expected[name])
    # A tensor without a gradient is skipped, not counted as zero movement of the others.
    params["t1"].grad = None
    before = method.scores["t0"].clone()
    method.after_backward(params, state)
    assert not torch.equal(method.scores["t0"], before)
    assert method.updates == 4

    # Pruning removes the weights with the lowest accumulated score (global threshold).
    scores = torch.cat([method.scores["t0"], method.scores["t1"]])
    k = round(0.4 * scores.numel())
    lowest = set(torch.argsort(scores)[:k].tolist())
    method.prune(params, state, 0.4, StepContext())
    pruned = torch.cat([~state["t0"], ~state["t1"]])
    assert set(torch.nonzero(pruned).reshape(-1).tolist()) == lowest
    for name, p in params.items():
        assert torch.all(p.detach().reshape(-1)[~state[name]] == 0)


def test_movement_prefers_weights_moving_away_from_zero() -> None:
    params = {"w": torch.nn.Parameter(torch.tensor([1.0, 1.0, -1.0, -1.0]))}
    method = MovementPruning()
    state = MaskState(params)
    method.prepare(params, state, StepContext())
    params["w"].grad = torch.tensor([-1.0, 1.0, 1.0, -1.0])  # SGD moves 0 and 2 away from zero
    method.after_backward(params, state)
    method.prune(params, state, 0.5, StepContext())
    assert state["w"].tolist() == [True, False, True, False]


def test_movement_without_backward_passes_refuses_to_prune(
    tiny_bert: BertForSequenceClassification,
) -> None:
    params = _params((4,))
    method = MovementPruning()
    state = MaskState(params)
    method.prepare(params, state, StepContext())
    with pytest.raises(RecipeError, match="no training step has run yet"):
        method.prune(params, state, 0.5, StepContext())
    with pytest.raises(RecipeError, match="no training step has run yet"):
        oneshot_prune(tiny_bert, "movement", 0.5)
    assert all(bool((p != 0).all()) for p in resolve_target_params(tiny_bert).values())


def test_movement_state_dict_round_trip() -> None:
    params = _params((2, 3))
    method = MovementPruning()
    state = MaskState(params)
    method.prepare(params, state, StepContext())
    params["t0"].grad = torch.ones(2, 3)
    method.after_backward(params, state)
    saved = method.state_dict()
    restored = MovementPruning()
    restored.load_state_dict(saved)
    assert restored.updates == 1
    torch.testing.assert_close(restored.scores["t0"], method.scores["t0"])
    restored.prepare(params, state, StepContext())  # a resume keeps the restored scores
    torch.testing.assert_close(restored.scores["t0"], method.scores["t0"])


# --------------------------------------------------------------------------- one-shot, all methods

# Methods whose sparsity is the fraction of zero weights (structured pruning counts atoms:
# tests/test_structured.py).
PRUNING = sorted(
    name for name, cls in METHODS.items() if cls.schedules_pruning and name != "structured"
)


def test_every_builtin_method_is_registered() -> None:
    assert set(PRUNING) >= {"obert", "magnitude", "movement"}
    assert not METHODS["constant"].schedules_pruning
    assert "structured" in METHODS


def _method(
    name: str, model: torch.nn.Module, task: ClassificationTask, **settings: Any
) -> PruningMethod:
    """A fresh method; movement first sees two backward passes (it ranks by training scores)."""
    method = create_method(name, **settings)
    if isinstance(method, MovementPruning):
        params = resolve_target_params(model)
        method.prepare(params, MaskState(params), StepContext())
        model.train()
        for batch in (
            task.collate(task.train_features[:6]),
            task.collate(task.train_features[6:12]),
        ):
            model.zero_grad()
            model(**batch).loss.backward()
            method.after_backward(params, MaskState(params))
        model.zero_grad()
        model.eval()
    return method


def _settings(name: str, **extra: Any) -> dict[str, Any]:
    if name == "lpvit":  # 1x1 blocks ranked like single weights: exact counts
        return {"mask_type": "1x1", "allocation": "global", "num_grads": 2, **extra}
    return {**(OBERT if name == "obert" else {}), **extra}


@pytest.mark.parametrize("global_sparsity", [True, False])
@pytest.mark.parametrize("name", PRUNING)
def test_oneshot_with_every_method_prunes_exactly_and_never_regrows(
    tiny_bert: BertForSequenceClassification,
    task: ClassificationTask,
    name: str,
    global_sparsity: bool,
) -> None:
    model = _copy(tiny_bert)
    params = resolve_target_params(model)
    total = sum(p.numel() for p in params.values())
    zeros_before: dict[str, torch.Tensor] = {}
    for sparsity in (0.3, 0.6):
        settings = _settings(name, global_sparsity=global_sparsity)
        method = _method(name, model, task, **settings)
        result = oneshot_prune(model, method, sparsity, task=task, progress=False)
        assert result.method == name
        zeros = {n: p.detach() == 0 for n, p in params.items()}
        if global_sparsity:
            assert sum(int(z.sum()) for z in zeros.values()) == round(sparsity * total)
        else:
            for n, z in zeros.items():
                assert int(z.sum()) == round(sparsity * z.numel()), n
        for n, z in zeros.items():
            assert torch.equal(~result.masks[n], z.reshape(-1))  # pruned <=> exactly zero
            if zeros_before:
                assert not torch.any(zeros_before[n] & ~z), n  # the second prune never regrows
        assert result.sparsity == pytest.approx(sum(int(z.sum()) for z in zeros.values()) / total)
        zeros_before = zeros


def test_constant_masks_never_prune(tiny_bert: BertForSequenceClassification) -> None:
    with pytest.raises(RecipeError, match="has no pruning step"):
        oneshot_prune(tiny_bert, "constant", 0.5)
    assert isinstance(create_method("constant"), ConstantPruning)


def test_oneshot_at_the_current_sparsity_prunes_nothing(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    oneshot_prune(tiny_bert, "magnitude", 0.5)
    before = {n: p.detach().clone() for n, p in resolve_target_params(tiny_bert).items()}
    result = oneshot_prune(tiny_bert, "obert", 0.5, settings=OBERT, task=task, progress=False)
    assert any("nothing to prune" in line for line in result.log)
    assert "gradients_s" not in result.timings  # no gradients were collected
    for name, p in resolve_target_params(tiny_bert).items():
        assert torch.equal(p.detach(), before[name])


def test_the_lifecycle_runs_in_order(tiny_bert: BertForSequenceClassification) -> None:
    calls: list[str] = []

    class Recording(MagnitudePruning):
        name: ClassVar[str] = "test-recording"

        def prepare(
            self, params: Mapping[str, torch.nn.Parameter], masks: MaskState, ctx: StepContext
        ) -> None:
            calls.append("prepare")

        def prune(
            self,
            params: Mapping[str, torch.nn.Parameter],
            masks: MaskState,
            sparsity: float,
            ctx: StepContext,
        ) -> None:
            calls.append(f"prune {sparsity}")
            super().prune(params, masks, sparsity, ctx)
            with torch.no_grad():  # a method that leaves pruned weights non-zero ...
                for p in params.values():
                    p.add_(1.0)

        def finalize(self, params: Mapping[str, torch.nn.Parameter], masks: MaskState) -> None:
            calls.append("finalize")

    result = oneshot_prune(tiny_bert, Recording(), 0.4)
    assert calls == ["prepare", "prune 0.4", "finalize"]
    for name, p in resolve_target_params(tiny_bert).items():  # ... is re-masked by the driver
        assert torch.all(p.detach().reshape(-1)[~result.masks[name]] == 0)


# --------------------------------------------------------------------------- registry


def test_duplicate_names_and_tags_are_refused() -> None:
    class Other(MagnitudePruning):
        name: ClassVar[str] = "magnitude"

    with pytest.raises(ValueError, match="'magnitude' is already registered"):
        register_method(Other)
    assert METHODS["magnitude"] is MagnitudePruning

    class Tagged(MagnitudePruning):
        name: ClassVar[str] = "test-tagged"
        recipe_tags: ClassVar[tuple[str, ...]] = ("OBSPruningModifier",)

    with pytest.raises(ValueError, match="'OBSPruningModifier' already selects method 'obert'"):
        register_method(Tagged)
    assert "test-tagged" not in METHODS
    assert register_method(MagnitudePruning) is MagnitudePruning  # re-registering is a no-op


def test_a_new_method_registers_and_runs_by_name(
    tiny_bert: BertForSequenceClassification,
) -> None:
    @register_method
    class FirstWeights(PruningMethod):
        """Prunes the first weights of every tensor (tests only)."""

        name: ClassVar[str] = "test-first"
        recipe_tags: ClassVar[tuple[str, ...]] = ("TestFirstModifier",)

        def prune(
            self,
            params: Mapping[str, torch.nn.Parameter],
            masks: MaskState,
            sparsity: float,
            ctx: StepContext,
        ) -> None:
            scores = {n: torch.arange(p.numel(), dtype=torch.float32) for n, p in params.items()}
            masks.update(select_masks(scores, sparsity, masks.as_dict(), self.settings))

    try:
        assert METHODS["test-first"] is FirstWeights
        assert method_for_tag("TestFirstModifier") is FirstWeights
        result = oneshot_prune(tiny_bert, "test-first", 0.25, settings={"global_sparsity": False})
        for name, p in resolve_target_params(tiny_bert).items():
            flat = p.detach().reshape(-1)
            k = round(0.25 * flat.numel())
            assert torch.all(flat[:k] == 0) and bool((flat[k:] != 0).all()), name
        assert result.method == "test-first"
    finally:
        METHODS.pop("test-first", None)


def test_recipe_tags_select_the_builtin_methods() -> None:
    assert method_for_tag("OBSPruningModifier") is ObertPruning
    assert method_for_tag("GMPruningModifier") is MagnitudePruning
    assert method_for_tag("MagnitudePruningModifier") is MagnitudePruning
    assert method_for_tag("MovementPruningModifier") is MovementPruning
    assert method_for_tag("ConstantPruningModifier") is ConstantPruning
    assert method_for_tag("NoSuchModifier") is None


def test_create_method_errors_name_the_method_and_the_allowed_settings() -> None:
    with pytest.raises(RecipeError, match="pruning method 'obs' unknown") as info:
        create_method("obs")
    for name in ("obert", "magnitude", "movement"):
        assert repr(name) in str(info.value)
    with pytest.raises(RecipeError, match="method 'obert': unknown setting 'block_size'") as info:
        create_method("obert", block_size=32)
    message = str(info.value)
    for allowed in ("fisher_block_size", "num_grads", "damp", "mask_type", "global_sparsity"):
        assert repr(allowed) in message
    with pytest.raises(RecipeError, match="method 'movement': unknown setting 'damp'"):
        create_method("movement", damp=1e-7)
    method = create_method("obert", fisher_block_size=32, mask_type="block4")
    assert isinstance(method, ObertPruning)
    assert method.settings.fisher_block_size == 32
    assert isinstance(method.settings, MethodSettings)
    assert create_method("obert") is not create_method("obert")  # a fresh instance each time
