import pytest

import obert_core as oc

# the authors' recipes, docs/recipes.md (derived from the cubic schedule), steps at epochs 2, 6, …, 26
CASES = {
    (0.7, 0.9): [0.7000, 0.7843, 0.8407, 0.8750, 0.8926, 0.8991, 0.9000],
    (0.7, 0.8): [0.700, 0.742, 0.770, 0.788, 0.796, 0.800, 0.800],
    (0.7, 0.97): [0.700, 0.814, 0.890, 0.936, 0.960, 0.969, 0.970],
    (0.3, 0.9): [0.300, 0.553, 0.722, 0.825, 0.878, 0.897, 0.900],
}


@pytest.mark.parametrize(("si_sf", "expected"), list(CASES.items()))
def test_cubic_schedule_matches_paper_recipes(
    si_sf: tuple[float, float], expected: list[float]
) -> None:
    steps = oc.pruning_steps(2, 26, 4)
    assert steps == [2, 6, 10, 14, 18, 22, 26]
    got = [oc.cubic_sparsity(t, *si_sf, 2, 26) for t in steps]
    digits = 4 if si_sf == (0.7, 0.9) else 3
    assert [round(v, digits) for v in got] == expected


def test_schedule_edges_and_linear() -> None:
    assert oc.cubic_sparsity(0, 0.7, 0.9, 2, 26) == pytest.approx(0.7)
    assert oc.cubic_sparsity(100, 0.7, 0.9, 2, 26) == pytest.approx(0.9)
    assert oc.linear_sparsity(14, 0.0, 0.8, 2, 26) == pytest.approx(0.4)
    assert oc.pruning_steps(0, 2.75, 0.25)[-1] == pytest.approx(2.75)
    assert len(oc.pruning_steps(0, 2.75, 0.25)) == 12  # upstream MLM recipe: 12 pruning steps


def test_recomputations_are_linear_and_end_at_target() -> None:
    sub = oc.recomputation_sparsities(0.5, 0.9, 4)
    assert sub == pytest.approx([0.6, 0.7, 0.8, 0.9]) and sub[-1] == 0.9
    assert oc.recomputation_sparsities(0.0, 0.7, 1) == [0.7]
    with pytest.raises(oc.ObertError, match="never regrow"):
        oc.recomputation_sparsities(0.8, 0.5, 2)
    with pytest.raises(oc.ObertError, match="num_recomputations"):
        oc.recomputation_sparsities(0.0, 0.5, 0)
