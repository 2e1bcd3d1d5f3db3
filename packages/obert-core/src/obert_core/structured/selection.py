"""Which atoms to remove: global or per-layer ranking with a minimum kept and rounded layer sizes.

Each layer ``l`` has ``n_l`` atoms (FFN neurons, heads, experts' neurons) with scores (lower =
removed first: :func:`~obert_core.output_saliency`, a weight norm, ...). A layer may only end at a
*kept size* in

    K_l = { k : k ≡ 0 (mod multiple), min_keep_l ≤ k ≤ n_l } ∪ { n_l }

(``multiple`` = 16 by default: matrix widths that kernels like), and it always keeps its
highest-scored atoms. ``scope="global"`` walks all layers at once: a layer's next step (down to its
next smaller kept size) is ranked by the largest score it removes, and steps are taken in that order
until the target count is reached — with ``multiple=1`` and ``min_keep=0`` exactly the plain global
ranking (ties broken by layer order, then index). The last step is taken only if it lands closer
to the target than stopping before it, so the total is within ``multiple / 2`` of the target when
every layer size is a multiple. ``scope="layer"`` gives each layer the kept size of ``K_l`` nearest
its own target (ties: keep more). Atoms removed earlier (``current_masks``) stay removed.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._arrays import check_finite, framework_of, is_torch, to_numpy
from .._errors import ObertError
from .._validate import check_choice, check_count, check_positive_int, check_sparsity

__all__ = ["select_atoms"]

SCOPES = ("global", "layer")


def _per_layer(value: Any, names: list[str], name: str) -> dict[str, int]:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ObertError(f"{name} names layers that have no scores: {unknown}; known: {names}.")
        return {n: check_count(value.get(n, 0), f"{name}[{n!r}]") for n in names}
    c = check_count(value, name)
    return dict.fromkeys(names, c)


def _describe(mins: dict[str, int]) -> str:
    values = set(mins.values())
    return str(values.pop()) if len(values) == 1 else str(mins)


def _back(mask: np.ndarray, like: Any) -> Any:
    if is_torch(like):
        import torch

        return torch.from_numpy(mask).to(like.device)
    return mask


def select_atoms(
    scores: Mapping[str, Any],
    fraction: float | None = None,
    *,
    num_remove: int | Mapping[str, int] | None = None,
    scope: str = "global",
    min_keep: int | Mapping[str, int] = 0,
    multiple: int = 16,
    current_masks: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Keep-masks over the atoms of several layers (True = kept), lowest scores removed.

    Args:
        scores: layer name → ``(n_l,)`` scores, one per atom (NumPy or torch, one framework).
        fraction: fraction of all atoms to remove, in [0, 1) (of each layer's with
            ``scope="layer"``). Give this or ``num_remove``.
        num_remove: number of atoms to remove: in total (``scope="global"``), per layer
            (``scope="layer"``), or a mapping name → count (per layer; implies ``scope="layer"``).
        scope: ``"global"`` (one ranking over all layers, as HEAPr) or ``"layer"``.
        min_keep: atoms every layer keeps at least (an int, or name → int; default 0 — a layer may
            disappear), rounded up to the next allowed kept size.
        multiple: kept sizes are multiples of this (or the full layer); default 16. Use 1 for heads.
        current_masks: name → boolean keep-mask of earlier pruning; those atoms stay removed.

    Returns:
        name → boolean keep-mask ``(n_l,)`` in the framework (and device) of that layer's scores.

    Raises:
        ObertError: bad arguments; a layer asked to lose more atoms than it has (or to go below
            ``min_keep``); ``min_keep`` above a layer's size; a total more than the layers can
            lose; non-finite scores; earlier-removed atoms beyond the target (no regrowth).
    """
    if not scores:
        raise ObertError("scores is empty; pass a mapping of layer name → per-atom scores.")
    names = list(scores)
    framework_of(*scores.values(), names=tuple(names))
    check_choice(scope, "scope", SCOPES)
    mult = check_positive_int(multiple, "multiple")
    if (fraction is None) == (num_remove is None):
        raise ObertError(
            "pass exactly one of fraction (e.g. 0.5) and num_remove (a count), got "
            f"fraction={fraction!r}, num_remove={num_remove!r}."
        )
    if isinstance(num_remove, Mapping):
        scope = "layer"
    keys: dict[str, np.ndarray] = {}
    forced: dict[str, int] = {}
    for name in names:
        sc = scores[name]
        if len(tuple(getattr(sc, "shape", ()))) != 1 or sc.shape[0] == 0:
            raise ObertError(
                f"scores[{name!r}] must be a non-empty 1-D array (one score per atom), got shape "
                f"{tuple(getattr(sc, 'shape', ()))}."
            )
        check_finite(sc, f"scores[{name!r}]")
        key = to_numpy(sc).astype(np.float64).copy()
        if current_masks is not None and name in current_masks:
            cm = to_numpy(current_masks[name]).reshape(-1)
            if cm.dtype != bool or cm.shape[0] != key.shape[0]:
                raise ObertError(
                    f"current_masks[{name!r}] must be a boolean keep-mask with {key.shape[0]} "
                    f"entries (one per atom), got dtype {cm.dtype} and {cm.shape[0]} entries."
                )
            key[~cm] = -np.inf  # removed earlier: first to go, always
        keys[name] = key
        forced[name] = int(np.isneginf(key).sum())
    mins = _per_layer(min_keep, names, "min_keep")
    sizes: dict[str, list[int]] = {}  # allowed kept sizes, descending, from the forced start
    for name in names:
        n, lo = keys[name].shape[0], mins[name]
        if lo > n:
            raise ObertError(
                f"min_keep={lo} is above the size of layer {name!r}, which has {n} atoms; lower "
                f"min_keep to at most {n}."
            )
        allowed = sorted({n} | {k for k in range(0, n + 1, mult) if k >= lo}, reverse=True)
        ok = [k for k in allowed if k <= n - forced[name]]
        if not ok:
            raise ObertError(
                f"layer {name!r} already has {forced[name]} of {n} atoms removed, leaving fewer "
                f"than min_keep={lo} (rounded to multiple={mult}); masks never regrow — lower "
                "min_keep."
            )
        sizes[name] = ok
    order = {n: np.argsort(keys[n], kind="stable") for n in names}
    if scope == "layer":
        kept = _layer_sizes(keys, sizes, forced, fraction, num_remove, names, mins, mult)
    else:
        kept = _global_sizes(keys, sizes, forced, fraction, num_remove, names, mins, mult, order)
    out: dict[str, Any] = {}
    for name in names:
        n = keys[name].shape[0]
        keep = np.ones(n, dtype=bool)
        keep[order[name][: n - kept[name]]] = False
        out[name] = _back(keep, scores[name])
    return out


def _layer_sizes(
    keys: dict[str, np.ndarray],
    sizes: dict[str, list[int]],
    forced: dict[str, int],
    fraction: float | None,
    num_remove: Any,
    names: list[str],
    mins: dict[str, int],
    mult: int,
) -> dict[str, int]:
    if fraction is not None:
        f = check_sparsity(fraction, "fraction")
        targets = {n: round(f * keys[n].shape[0]) for n in names}
    else:
        targets = _per_layer(num_remove, names, "num_remove")
    kept: dict[str, int] = {}
    for name in names:
        n, r = keys[name].shape[0], targets[name]
        if r > n:
            raise ObertError(
                f"num_remove={r} for layer {name!r} is more than its {n} atoms; a layer cannot "
                "lose more atoms than it has."
            )
        if forced[name] > r:
            raise ObertError(
                f"layer {name!r} already has {forced[name]} atoms removed, more than the "
                f"{r} asked; masks never regrow — raise the target."
            )
        t = n - r
        if t < sizes[name][-1]:
            raise ObertError(
                f"removing {r} of the {n} atoms of layer {name!r} leaves {t}, below "
                f"min_keep={mins[name]} (smallest allowed kept size {sizes[name][-1]} with "
                f"multiple={mult}); lower the target or min_keep."
            )
        kept[name] = min(sizes[name], key=lambda k: (abs(k - t), -k))  # ties: keep more
    return kept


def _global_sizes(
    keys: dict[str, np.ndarray],
    sizes: dict[str, list[int]],
    forced: dict[str, int],
    fraction: float | None,
    num_remove: Any,
    names: list[str],
    mins: dict[str, int],
    mult: int,
    order: dict[str, np.ndarray],
) -> dict[str, int]:
    total = sum(keys[n].shape[0] for n in names)
    if fraction is not None:
        target = round(check_sparsity(fraction, "fraction") * total)
    else:
        target = check_count(num_remove, "num_remove")
    if target > total:
        raise ObertError(
            f"num_remove={target} is more than the {total} atoms of all layers together."
        )
    most = sum(keys[n].shape[0] - sizes[n][-1] for n in names)
    if target > most:
        raise ObertError(
            f"cannot remove {target} of {total} atoms: with min_keep={_describe(mins)} and "
            f"multiple={mult} at most {most} can go; lower the target or min_keep."
        )
    if sum(forced.values()) > target:
        raise ObertError(
            f"{sum(forced.values())} atoms are already removed, more than the target {target}; "
            "masks never regrow — raise the target."
        )
    pos = dict.fromkeys(names, 0)
    sorted_keys = {n: keys[n][order[n]] for n in names}
    done = sum(keys[n].shape[0] - sizes[n][0] for n in names)
    heap: list[tuple[float, int]] = []

    def push(i: int) -> None:
        name = names[i]
        p, s = pos[name], sizes[name]
        if p + 1 < len(s):
            n = keys[name].shape[0]
            heapq.heappush(heap, (float(sorted_keys[name][n - s[p + 1] - 1]), i))

    for i in range(len(names)):
        push(i)
    while done < target and heap:
        _, i = heapq.heappop(heap)
        name = names[i]
        chunk = sizes[name][pos[name]] - sizes[name][pos[name] + 1]
        if done + chunk > target:
            if done + chunk - target < target - done:
                pos[name] += 1
                done += chunk
            break
        pos[name] += 1
        done += chunk
        push(i)
    return {n: sizes[n][pos[n]] for n in names}
