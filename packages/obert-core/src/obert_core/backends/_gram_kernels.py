"""The lower triangle of each block's Gram ``X_bᵀX_b`` in float32 register tiles (docs/math.md §2).

The batched build adds ``X_bᵀX_b`` of every ``k × B`` gradient block ``X_b`` of a chunk to its
``B × B`` accumulator. A batched BLAS GEMM computes the whole ``B × B`` product, and at ``B = 50``
it runs at 2–3× the time per flop of one large GEMM (docs/benchmarks.md): the products are small
and 50 is not a multiple of the vector width. :func:`gram_lower_kernel` computes only what the
consumers read, the lower triangle (``FisherBlocks``, ``fill_unseen_curvature`` and the Cholesky
inversion read nothing else):

* **Packing.** The ``k`` rows of a *panel* of consecutive blocks are copied from the ``(k, d)``
  chunk into a contiguous buffer, each block as a ``k × W`` matrix with ``W`` a multiple of 16 plus
  8 columns of zero padding. The rows of the chunk are ``d`` floats apart, so reading a block where
  it lies touches ``k`` pages per block; a panel reads ``k`` contiguous runs of ``panel · B``
  floats instead.
* **Register tiles.** A ``5 × 16`` tile of the output (ten 8-float accumulators) takes, per
  gradient, two 8-float loads, five broadcasts and ten fused multiply-adds: five cycles of a
  core's two FMA pipes, longer than an FMA's latency, so the pipes never wait. The tiles cover the
  lower triangle in rows of 5 and columns of 16 (``5 × 8`` where the right half would lie above
  the diagonal; those half tiles take two gradients per step into two sets of five accumulators,
  so that five FMAs per gradient do not wait on their own latency); at ``B = 50`` they compute
  1,560 of the 2,500 entries, without a row of padding. Padding columns (and rows where 5 does
  not divide ``B``) are computed and dropped, so no tile needs a bound check inside its loop.
* **Tile order.** While the chunks are added, each block's accumulator holds exactly what its
  tiles compute, tile after tile (``5 × 16`` or ``5 × 8`` floats each, rows contiguous): 1,560
  floats a block at ``B = 50`` instead of 2,500, so each chunk reads and writes 38 % fewer bytes
  of the accumulator, and each tile is added (``first``: written) to contiguous memory once, after
  its ``k`` gradients. The tile-ordered blocks lie at the end of the ``(nb, B, B)`` Gram's own
  memory (:func:`tiled_offset`). When at most one chunk is left, :func:`untile` moves each
  block's sum into the ``B × B`` layout, in place (the lower triangle, zeros above it;
  :func:`untile` says why that is safe and how it uses every core), and
  :func:`gram_block_kernel` adds the last chunk there.
* **Finite rows.** The tiles of a block's last row group also check row ``B − 1`` of the sum: a
  NaN or inf gradient entry ``g_tj`` makes its entry ``j`` non-finite (``bad[b]`` is set), which
  is the check the builder makes after each chunk.

The tiles are written as eight scalar lanes for LLVM's SLP vectoriser (Numba keeps it off by
default; :func:`._lane_kernels.slp_vectorize` turns it on while these kernels compile), with
unsigned offsets into flat arrays, for which Numba emits no negative-index wrap-around, so
consecutive lanes are consecutive addresses. :func:`tiles_agree` checks the compiled kernel once
per process against a float64 product; the torch backend falls back to the batched GEMM if it
does not agree.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._arrays import require_numba
from .._errors import ObertError
from ._lane_kernels import Lanes, slp_vectorize

__all__ = [
    "TILE_COLS",
    "TILE_ROWS",
    "add_tiles",
    "gram_block_kernel",
    "gram_lower_kernel",
    "panel_blocks",
    "tiled_offset",
    "tiled_size",
    "tiles_agree",
    "untile",
]

numba = require_numba()

TILE_ROWS = 5
"""Output rows of a register tile."""
TILE_COLS = 16
"""Output columns of a register tile (two 8-float halves)."""

_CONTRACT = {"contract"}
_u = numba.uint64


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _packed_width(bs: int) -> int:  # pragma: no cover
    """Floats per packed row of a ``B``-wide block: a multiple of 16, plus 8 zero columns."""
    return -(-bs // 16) * 16 + 8


@numba.njit(cache=True, inline="always", fastmath=_CONTRACT)  # type: ignore[untyped-decorator]
def _fma8(t: Lanes, s: float, p: np.ndarray, o: int) -> Lanes:  # pragma: no cover
    """``t_l + s · p[o + l]`` for the eight lanes ``l``."""
    return (
        t[0] + s * p[o],
        t[1] + s * p[o + _u(1)],
        t[2] + s * p[o + _u(2)],
        t[3] + s * p[o + _u(3)],
        t[4] + s * p[o + _u(4)],
        t[5] + s * p[o + _u(5)],
        t[6] + s * p[o + _u(6)],
        t[7] + s * p[o + _u(7)],
    )


@numba.njit(cache=True, inline="always", fastmath=_CONTRACT)  # type: ignore[untyped-decorator]
def _store8(a: np.ndarray, o: int, t: Lanes) -> None:  # pragma: no cover
    """``a[o + l] = t_l`` for the eight lanes."""
    a[o] = t[0]
    a[o + _u(1)] = t[1]
    a[o + _u(2)] = t[2]
    a[o + _u(3)] = t[3]
    a[o + _u(4)] = t[4]
    a[o + _u(5)] = t[5]
    a[o + _u(6)] = t[6]
    a[o + _u(7)] = t[7]


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _load8(a: np.ndarray, o: int) -> Lanes:  # pragma: no cover
    """``a[o + l]`` for the eight lanes."""
    return (
        a[o],
        a[o + _u(1)],
        a[o + _u(2)],
        a[o + _u(3)],
        a[o + _u(4)],
        a[o + _u(5)],
        a[o + _u(6)],
        a[o + _u(7)],
    )


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _add8(x: Lanes, v: Lanes) -> Lanes:  # pragma: no cover
    """``x_l + v_l`` for the eight lanes."""
    return (
        x[0] + v[0],
        x[1] + v[1],
        x[2] + v[2],
        x[3] + v[3],
        x[4] + v[4],
        x[5] + v[5],
        x[6] + v[6],
        x[7] + v[7],
    )


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _merge8(a: np.ndarray, o: int, t: np.ndarray, s: int, first: bool) -> None:  # pragma: no cover
    """``a[o + l] (+)= t[s + l]`` for the eight lanes (``first``: assign)."""
    v = _load8(t, s)
    if not first:
        v = _add8(_load8(a, o), v)
    _store8(a, o, v)


@numba.njit(cache=True, inline="always", fastmath=_CONTRACT)  # type: ignore[untyped-decorator]
def _tile16(
    tile: np.ndarray, p: np.ndarray, k: int, w: int, r: int, c: int
) -> None:  # pragma: no cover
    """``tile[i·16 + j] = Σ_t p[t·w + r + i] · p[t·w + c + j]`` for ``i < 5``, ``j < 16``."""
    z = tile.dtype.type(0.0)
    a0 = (z, z, z, z, z, z, z, z)
    a1 = a2 = a3 = a4 = b0 = b1 = b2 = b3 = b4 = a0
    c8 = c + _u(8)
    base = _u(0)
    for _ in range(k):
        o = base + r
        x = p[o]
        a0 = _fma8(a0, x, p, base + c)
        b0 = _fma8(b0, x, p, base + c8)
        x = p[o + _u(1)]
        a1 = _fma8(a1, x, p, base + c)
        b1 = _fma8(b1, x, p, base + c8)
        x = p[o + _u(2)]
        a2 = _fma8(a2, x, p, base + c)
        b2 = _fma8(b2, x, p, base + c8)
        x = p[o + _u(3)]
        a3 = _fma8(a3, x, p, base + c)
        b3 = _fma8(b3, x, p, base + c8)
        x = p[o + _u(4)]
        a4 = _fma8(a4, x, p, base + c)
        b4 = _fma8(b4, x, p, base + c8)
        base += w
    _store8(tile, _u(0), a0)
    _store8(tile, _u(8), b0)
    _store8(tile, _u(16), a1)
    _store8(tile, _u(24), b1)
    _store8(tile, _u(32), a2)
    _store8(tile, _u(40), b2)
    _store8(tile, _u(48), a3)
    _store8(tile, _u(56), b3)
    _store8(tile, _u(64), a4)
    _store8(tile, _u(72), b4)


@numba.njit(cache=True, inline="always", fastmath=_CONTRACT)  # type: ignore[untyped-decorator]
def _tile8(
    tile: np.ndarray, p: np.ndarray, k: int, w: int, r: int, c: int
) -> None:  # pragma: no cover
    """The left half of :func:`_tile16` (``j < 8``), at the same places of ``tile``.

    Gradients ``t`` and ``t + 1`` go into two sets of accumulators (summed at the end): five
    FMAs per gradient would otherwise wait on the latency of the previous five.
    """
    z = tile.dtype.type(0.0)
    a0 = (z, z, z, z, z, z, z, z)
    a1 = a2 = a3 = a4 = e0 = e1 = e2 = e3 = e4 = a0
    base = _u(0)
    for _ in range(k // 2):
        o = base + r
        q = base + c
        a0 = _fma8(a0, p[o], p, q)
        a1 = _fma8(a1, p[o + _u(1)], p, q)
        a2 = _fma8(a2, p[o + _u(2)], p, q)
        a3 = _fma8(a3, p[o + _u(3)], p, q)
        a4 = _fma8(a4, p[o + _u(4)], p, q)
        o += w
        q += w
        e0 = _fma8(e0, p[o], p, q)
        e1 = _fma8(e1, p[o + _u(1)], p, q)
        e2 = _fma8(e2, p[o + _u(2)], p, q)
        e3 = _fma8(e3, p[o + _u(3)], p, q)
        e4 = _fma8(e4, p[o + _u(4)], p, q)
        base += w + w
    if k % 2:
        o = base + r
        q = base + c
        a0 = _fma8(a0, p[o], p, q)
        a1 = _fma8(a1, p[o + _u(1)], p, q)
        a2 = _fma8(a2, p[o + _u(2)], p, q)
        a3 = _fma8(a3, p[o + _u(3)], p, q)
        a4 = _fma8(a4, p[o + _u(4)], p, q)
    _store8(tile, _u(0), _add8(a0, e0))
    _store8(tile, _u(16), _add8(a1, e1))
    _store8(tile, _u(32), _add8(a2, e2))
    _store8(tile, _u(48), _add8(a3, e3))
    _store8(tile, _u(64), _add8(a4, e4))


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _pack(
    p: np.ndarray, g: np.ndarray, d: int, k: int, start: int, count: int, bs: int, w: int
) -> None:  # pragma: no cover
    """Copy blocks ``start … start + count − 1`` of the ``(k, d)`` chunk (flat ``g``) into ``p``.

    Block ``q`` of the panel becomes the ``k × w`` matrix at ``p[q·k·w:]``, row ``t`` holding
    ``g[t, (start + q)·B : (start + q + 1)·B]``; the padding columns keep their zeros.
    """
    stride = _u(k * w)
    ubs = _u(bs)
    for t in range(k):
        src = _u(t) * _u(d) + _u(start) * ubs
        dst = _u(t) * _u(w)
        for _ in range(count):
            for j in range(bs):
                p[dst + _u(j)] = g[src + _u(j)]
            src += ubs
            dst += stride


@numba.njit(cache=True)  # type: ignore[untyped-decorator]
def tiled_size(bs: int) -> int:  # pragma: no cover
    """Floats a ``B``-wide block takes in tile order: the entries its tiles compute.

    At most ``B²`` for ``B = 15``, ``18``–``20`` and ``B ≥ 22``.
    """
    size = 0
    for r0 in range(0, bs, TILE_ROWS):
        for c0 in range(0, r0 + TILE_ROWS, TILE_COLS):
            size += TILE_ROWS * (8 if c0 + 8 > r0 + TILE_ROWS - 1 else TILE_COLS)
    return size


def tiled_offset(full: int, block_size: int) -> int:
    """Where the tile-ordered blocks start in the flat Gram of ``full`` full blocks.

    At the end of the full blocks' memory, ``(B² − C)·full`` floats in (``C`` =
    :func:`tiled_size`): :func:`untile`, going forwards, then never overwrites a tile-ordered
    block it has not read yet, and the tail block after them stays free.
    """
    spare = block_size * block_size - int(tiled_size(block_size))
    if spare < 0:
        raise ObertError(
            f"the tile order of a {block_size} × {block_size} block does not fit in it; the "
            "Gram tiles take B = 15, 18-20 or B >= 22."
        )
    return spare * full


@numba.njit(nogil=True, cache=True, fastmath=_CONTRACT)  # type: ignore[untyped-decorator]
def gram_block_kernel(
    lo: int, hi: int, acc: np.ndarray, g: np.ndarray, panel: int
) -> None:  # pragma: no cover
    """Add the lower triangle of ``X_bᵀX_b`` to ``acc[b]`` in the ``B × B`` layout, ``lo ≤ b < hi``.

    The kernel for the chunks after the move out of the tile order (:func:`add_tiles`), so never
    the first chunk: ``acc`` already holds the sums.

    Args:
        lo: First block.
        hi: One past the last block; every block in range is full (``hi·B ≤ d``).
        acc: ``(nb, B, B)`` C-contiguous accumulator, the dtype of ``g``.
        g: ``(k, d)`` C-contiguous chunk; block ``b`` is columns ``b·B … b·B + B − 1``.
        panel: blocks packed at once (see the module docstring).
    """
    k, d = g.shape
    bs = acc.shape[1]
    w = _packed_width(bs)
    stride = k * w
    p = np.zeros(panel * stride, dtype=acc.dtype)
    tile = np.empty(TILE_ROWS * TILE_COLS, dtype=acc.dtype)
    flat_g = g.reshape(-1)
    flat_acc = acc.reshape(-1)
    uw = _u(w)
    ubs = _u(bs)
    for b0 in range(lo, hi, panel):
        count = min(panel, hi - b0)
        _pack(p, flat_g, d, k, b0, count, bs, w)
        for q in range(count):
            pq = p[q * stride : (q + 1) * stride]
            block = _u((b0 + q) * bs * bs)
            for r0 in range(0, bs, TILE_ROWS):
                for c0 in range(0, r0 + TILE_ROWS, TILE_COLS):
                    half = c0 + 8 > r0 + TILE_ROWS - 1  # columns c0 + 8 … lie above the diagonal
                    width = 8 if half else TILE_COLS
                    if half:
                        _tile8(tile, pq, k, uw, _u(r0), _u(c0))
                    else:
                        _tile16(tile, pq, k, uw, _u(r0), _u(c0))
                    if r0 + TILE_ROWS <= bs and c0 + width <= bs:
                        o = block + _u(r0 * bs + c0)
                        for i in range(TILE_ROWS):
                            s = _u(i * TILE_COLS)
                            _merge8(flat_acc, o, tile, s, False)
                            if not half:
                                _merge8(flat_acc, o + _u(8), tile, s + _u(8), False)
                            o += ubs
                    else:  # the padded edge: only the rows and columns inside the block
                        for i in range(min(TILE_ROWS, bs - r0)):
                            for j in range(min(width, bs - c0)):
                                acc[b0 + q, r0 + i, c0 + j] += tile[i * TILE_COLS + j]


@numba.njit(nogil=True, cache=True, fastmath=_CONTRACT)  # type: ignore[untyped-decorator]
def gram_lower_kernel(
    lo: int,
    hi: int,
    tiled: np.ndarray,
    g: np.ndarray,
    bs: int,
    first: bool,
    panel: int,
    bad: np.ndarray,
) -> None:  # pragma: no cover
    """Add the lower triangle of ``X_bᵀX_b`` to block ``b`` of ``tiled`` for ``lo ≤ b < hi``.

    Args:
        lo: First block.
        hi: One past the last block; every block in range is full (``hi·B ≤ d``).
        tiled: flat accumulator in tile order, :func:`tiled_size` floats a block, the dtype of
            ``g``.
        g: ``(k, d)`` C-contiguous chunk; block ``b`` is columns ``b·B … b·B + B − 1``.
        bs: The block size ``B``.
        first: write the products instead of adding them (``tiled`` is not read).
        panel: blocks packed at once (see the module docstring).
        bad: ``bad[b]`` is set to 1 when row ``B − 1`` of block ``b``'s sum is not finite
            (left alone otherwise).
    """
    k, d = g.shape
    w = _packed_width(bs)
    stride = k * w
    size = tiled_size(bs)
    last = (bs - 1) // TILE_ROWS * TILE_ROWS  # the row group of row B - 1
    row = bs - 1 - last  # its row in the tiles
    p = np.zeros(panel * stride, dtype=tiled.dtype)
    tile = np.empty(TILE_ROWS * TILE_COLS, dtype=tiled.dtype)
    flat_g = g.reshape(-1)
    uw = _u(w)
    for b0 in range(lo, hi, panel):
        count = min(panel, hi - b0)
        _pack(p, flat_g, d, k, b0, count, bs, w)
        for q in range(count):
            pq = p[q * stride : (q + 1) * stride]
            o = _u((b0 + q) * size)
            for r0 in range(0, bs, TILE_ROWS):
                for c0 in range(0, r0 + TILE_ROWS, TILE_COLS):
                    half = c0 + 8 > r0 + TILE_ROWS - 1  # columns c0 + 8 … lie above the diagonal
                    width = 8 if half else TILE_COLS
                    if half:
                        _tile8(tile, pq, k, uw, _u(r0), _u(c0))
                    else:
                        _tile16(tile, pq, k, uw, _u(r0), _u(c0))
                    for i in range(TILE_ROWS):
                        s = _u(i * TILE_COLS)
                        _merge8(tiled, o + _u(i * width), tile, s, first)
                        if not half:
                            _merge8(tiled, o + _u(i * width + 8), tile, s + _u(8), first)
                    if r0 == last:
                        for j in range(width):
                            if not np.isfinite(tiled[o + _u(row * width + j)]):
                                bad[b0 + q] = 1
                    o += _u(TILE_ROWS * width)


@numba.njit(nogil=True, cache=True)  # type: ignore[untyped-decorator]
def _untile_kernel(
    lo: int, hi: int, start: int, flat: np.ndarray, offset: int, bs: int
) -> None:  # pragma: no cover
    """Blocks ``start + lo … start + hi − 1`` from tile order (at ``offset``) to ``B × B``.

    Each block's tiles are copied out first (they may lie under its own ``B × B`` entries), then
    written row by row: eight floats at a time from each tile of the row's group (entries above
    the diagonal included, never past the row's end), then zeros above the diagonal.
    """
    size = tiled_size(bs)
    blk = np.empty(size, dtype=flat.dtype)
    ubs = _u(bs)
    for b in range(start + lo, start + hi):
        src = _u(offset) + _u(b * size)
        for t in range(size):
            blk[t] = flat[src + _u(t)]
        dst = b * bs * bs
        group = 0  # where the tiles of rows r0 … r0 + 4 start in ``blk``
        for r0 in range(0, bs, TILE_ROWS):
            for i in range(min(TILE_ROWS, bs - r0)):
                r = r0 + i
                row = _u(dst) + _u(r) * ubs
                o = group
                for c0 in range(0, r0 + TILE_ROWS, TILE_COLS):
                    width = 8 if c0 + 8 > r0 + TILE_ROWS - 1 else TILE_COLS
                    for h in range(0, width, 8):
                        c = c0 + h
                        if c > r:
                            break
                        if c + 8 <= bs:
                            _store8(flat, row + _u(c), _load8(blk, _u(o + i * width + h)))
                        else:
                            for j in range(bs - c):
                                flat[row + _u(c + j)] = blk[o + i * width + h + j]
                    o += TILE_ROWS * width
                for j in range(r + 1, bs):
                    flat[row + _u(j)] = 0.0
            for c0 in range(0, r0 + TILE_ROWS, TILE_COLS):
                group += TILE_ROWS * (8 if c0 + 8 > r0 + TILE_ROWS - 1 else TILE_COLS)


_PARALLEL_ROUND = 128
"""Blocks a round needs to run on several threads (``run_on_blocks`` gives each 64 or more)."""


def add_tiles(
    flat: np.ndarray,
    full: int,
    chunk: np.ndarray,
    block_size: int,
    *,
    first: bool,
    tile_order: bool,
    untile_after: bool,
) -> bool | None:
    """Add a chunk's lower triangles to the ``full`` blocks of a flat float32 Gram (all cores).

    Args:
        flat: The flat Gram (at least ``full·B²`` floats).
        full: Full blocks (``d // B``).
        chunk: ``(k, d)`` C-contiguous float32 gradients.
        block_size: ``B``.
        first: The first chunk (the accumulator is written, not read).
        tile_order: The blocks are in tile order at :func:`tiled_offset` (from the first chunk
            on); False: already in the ``(full, B, B)`` layout, after a move (so not ``first``).
        untile_after: With ``tile_order``, move the blocks into the ``(full, B, B)`` layout after
            this chunk (:func:`untile`). The builder does it when at most one chunk is left, so
            that in a pruning step the move runs in the Gram worker while the last chunk's
            gradients are computed, and the last chunk adds into the ``B × B`` layout.

    Returns:
        In tile order, whether row ``B − 1`` of every block's sum is finite; ``None`` in the
        ``B × B`` layout, whose rows the caller checks where they lie.

    Raises:
        ObertError: For a ``first`` chunk outside the tile order.
    """
    from ._block_kernels import run_on_blocks

    if first and not tile_order:
        raise ObertError(
            "the Gram tiles add the first chunk in tile order (tile_order=True); the B x B "
            "layout only takes chunks after the move out of it"
        )
    panel = panel_blocks(chunk.shape[0], block_size)
    size = full * block_size * block_size
    with slp_vectorize():  # compiled (and checked) by tiles_agree; on if compiled here
        if not tile_order:  # the caller checks the B x B Gram's rows (``None``)
            acc = flat[:size].reshape(full, block_size, block_size)
            run_on_blocks(gram_block_kernel, full, acc, chunk, panel)
            return None
        bad = np.zeros(full, dtype=np.uint8)
        tiled = flat[tiled_offset(full, block_size) : size]
        run_on_blocks(gram_lower_kernel, full, tiled, chunk, block_size, first, panel, bad)
    if untile_after:
        untile(flat, full, block_size)
    return not bad.any()


def untile(flat: np.ndarray, full: int, block_size: int) -> None:
    """Move the ``full`` tile-ordered blocks of a flat Gram into the ``(full, B, B)`` layout.

    In place: the lower triangles, zeros above them. Block ``b`` moves from its tile order at
    ``offset + b·C`` to ``b·B²`` and ends at ``(b + 1)·B² ≤ offset + (b + 1)·C`` (``offset =
    (B² − C)·full``), before the tile order of every later block: blocks in order on one thread
    never overwrite one not read yet. Blocks ``a … a′ − 1`` with ``a′·B² ≤ offset + a·C`` reach
    no tile order from block ``a`` on, so such a round runs on every core (``run_on_blocks``);
    the rounds take 38 % of the blocks left at ``B = 50``, and once a round would be too small
    to split, the rest runs on one thread.
    """
    from ._block_kernels import run_on_blocks

    size = int(tiled_size(block_size))
    offset = tiled_offset(full, block_size)
    a = 0
    while a < full:
        stop = (offset + a * size) // (block_size * block_size)
        if stop - a < _PARALLEL_ROUND:
            _untile_kernel(0, full - a, a, flat, offset, block_size)
            return
        run_on_blocks(_untile_kernel, stop - a, a, flat, offset, block_size)
        a = stop


def panel_blocks(k: int, block_size: int) -> int:
    """Blocks packed at once: a panel of about 256 KiB (an L2 cache's share), 1 to 16 blocks."""
    width = int(_packed_width(block_size))
    return max(1, min(16, (256 * 1024) // (4 * k * width)))


_TILES_AGREE: bool | None = None


def _agrees(acc: np.ndarray, want: np.ndarray, zeros_above: bool) -> bool:
    """The lower triangles to float32 round-off of ``want``'s largest entry, finite above.

    Above them zeros with ``zeros_above`` (after :func:`untile`), else finite numbers (after
    :func:`gram_block_kernel`).
    """
    bs = acc.shape[-1]
    low = np.tril(np.ones((bs, bs), dtype=bool))
    err = np.abs(acc[:, low] - want[:, low]).max()
    above = not acc[:, ~low].any() if zeros_above else bool(np.isfinite(acc).all())
    return bool(err <= 1e-5 * np.abs(want).max()) and above


def tiles_agree() -> bool:
    """Whether the compiled kernel gives float64's lower triangle to float32 round-off (once).

    Checked once per process on fixed data: blocks of sizes 18, 50 and 51 (edges and full
    tiles, both halves), odd and even chunk sizes, a first chunk and an added one then
    :func:`untile`, and a first chunk moved out of the tile order then a chunk added in the
    ``B × B`` layout (:func:`gram_block_kernel`); zeros (then finite numbers) above the diagonal
    and no row reported non-finite. Compiles the kernel with
    SLP vectorisation. A disagreement warns (``RuntimeWarning`` naming the build) and returns
    False: the caller uses the batched GEMM instead.
    """
    global _TILES_AGREE
    if _TILES_AGREE is None:
        ok = True
        rng = np.random.default_rng(0)
        for bs in (18, 50, 51):
            nb, k = 5, 13
            g = rng.standard_normal((k, nb * bs + 3)).astype(np.float32)
            x = g[:, : nb * bs].astype(np.float64).reshape(k, nb, bs).transpose(1, 0, 2)
            want = np.einsum("nki,nkj->nij", x, x)
            flat = np.full(nb * bs * bs, np.nan, dtype=np.float32)  # the chunk twice, untile
            for first in (True, False):
                rows = add_tiles(flat, nb, g, bs, first=first, tile_order=True, untile_after=False)
                ok = ok and rows is True
            untile(flat, nb, bs)
            ok = ok and _agrees(flat.reshape(nb, bs, bs), 2.0 * want, zeros_above=True)
            flat[:] = np.nan  # in tile order, moved, then a chunk into the B x B layout
            rows = add_tiles(flat, nb, g[:6], bs, first=True, tile_order=True, untile_after=True)
            ok = ok and rows is True
            rows = add_tiles(flat, nb, g[6:], bs, first=False, tile_order=False, untile_after=False)
            ok = ok and rows is None  # the B x B layout's rows: checked by _agrees below
            ok = ok and _agrees(flat.reshape(nb, bs, bs), want, zeros_above=False)
        _TILES_AGREE = ok
        if not ok:
            warnings.warn(
                f"obert-core's Gram tile kernel disagrees with float64 on this build (numba "
                f"{numba.__version__}, LLVM SLP vectorisation); the torch backend uses the "
                "batched GEMM instead (slower, same results). Please report it.",
                RuntimeWarning,
                stacklevel=2,
            )
    return _TILES_AGREE
