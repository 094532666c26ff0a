"""Exact TopK-family codes on CPU from a bfloat16 screen.

The encoder of a TopK-family SAE computes every pre-activation ``pre = x @ W + b`` of a batch
(a (B, K) float32 GEMM) only to keep a few of them per row: the k largest (``sae-topk``) or those
above a threshold (BatchTopK, Matryoshka). On CPUs with bfloat16 dot-product instructions
(AVX512-BF16, AMX) a bfloat16 GEMM runs about four times faster than the float32 one, and a
rigorous bound on its error tells which entries can possibly be kept:

1. ``s = bf16(x^) @ bf16(W^)`` with ``x^ = [x, 1]``, ``W^ = [W; b]`` (the bias rides in the
   GEMM), accumulated in float32 and rounded to bfloat16.
2. Each entry's error against the exact pre-activation is at most
   ``e_in + u/(1-u) |s|``, where ``e_in = (2u + u^2 + gamma) ||x^|| max_j ||W^_j||`` bounds the
   rounding of both inputs (Cauchy-Schwarz on ``sum_l |x^_l W^_lj|``), ``gamma`` the float32
   accumulation over the inner dimension and ``u = 2^-8`` the bfloat16 unit roundoff of the
   output.
3. TopK: the exact float32 values of each row's k best screened entries (``sampled_addmm``,
   a sampled dense-dense product that computes only the asked entries) give a lower bound
   ``tau`` of its k-th largest pre-activation. Every entry whose upper bound reaches ``tau`` is
   a candidate; their exact values are computed the same way and the k largest are kept.
   Thresholded maps: candidates are the entries whose upper bound exceeds the threshold.

No entry outside the candidates can belong to the codes, so the result is the float32
encoder's, to float32 rounding (tests/test_analysis_screen.py compares them, also on
near-ties that bfloat16 cannot tell apart). :func:`screen_pays` says when to use it.
"""

from __future__ import annotations

import warnings

import torch

from .threads import one_thread

UNIT = 2.0**-8  # bfloat16 unit roundoff (8 significant bits)
FLOAT32_UNIT = 2.0**-24
PAD = 32  # the GEMM's inner dimension is padded to a multiple of this
MIN_LATENTS = 4096  # below this the float32 GEMM is cheap and the screen's fixed costs win


def screen_pays(device: torch.device | str, n_features: int) -> bool:
    """Whether to screen on ``device``: a CPU with fast bfloat16 GEMMs (oneDNN reports
    support) and at least :data:`MIN_LATENTS` latents (``benchmarks/analysis_screen.py``
    measures both paths)."""
    if torch.device(device).type != "cpu" or n_features < MIN_LATENTS:
        return False
    try:
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):  # a torch build without the query
        return False


class ScreenedPreActs:
    """The kept pre-activations of ``x @ w + b`` for (d, K) ``w`` and (K,) ``b`` (float32)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        d, self.n_features = w.shape
        weights = torch.cat([w, b[None]]).float()  # (d + 1, K)
        self.columns = weights.T.contiguous()  # each latent's weights contiguous, for sampling
        self.pad = -(d + 1) % PAD
        self.weights_bf16 = torch.cat(
            [weights, weights.new_zeros(self.pad, self.n_features)]
        ).bfloat16()
        inner = d + 1 + self.pad
        gamma = 2 * inner * FLOAT32_UNIT  # float32 accumulation, with a factor 2 to spare
        self.input_error = (2 * UNIT + UNIT * UNIT + gamma) * float(self.columns.norm(dim=1).max())
        self.finite = bool(torch.isfinite(weights).all())

    def topk(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, values), each (B, k): the k largest pre-activations of each row."""
        xa, rows, cols = self.topk_candidates(x, k)
        with one_thread():
            return _row_topk(rows, cols, self._exact(xa, rows, cols), len(x), k)

    def topk_candidates(
        self, x: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[x, 1]`` and the row-major (rows, cols) of the entries that can be among a row's
        k largest pre-activations."""
        xa, s, e_in = self._screen(x)
        with one_thread():
            first = s.topk(k, dim=1, sorted=False).indices
            rows = torch.arange(len(x)).repeat_interleave(k)
            tau = self._exact(xa, rows, first.flatten()).view(-1, k).amin(1)
            return (xa, *_reaching(s, tau - e_in))

    def above(self, x: torch.Tensor, threshold: float) -> tuple[torch.Tensor, ...]:
        """(rows, cols, values) of the pre-activations above ``threshold``, row-major."""
        xa, s, e_in = self._screen(x)
        with one_thread():
            rows, cols = _reaching(s, threshold - e_in)
            exact = self._exact(xa, rows, cols)
            keep = exact > threshold
            return rows[keep], cols[keep], exact[keep]

    def _screen(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[x, 1]``, the bfloat16 GEMM (on every thread) and each row's input error."""
        with one_thread():
            xa = torch.cat([x.float(), x.new_ones(len(x), 1)], 1)
            xb = xa.new_zeros(len(x), xa.shape[1] + self.pad, dtype=torch.bfloat16)
            xb[:, : xa.shape[1]] = xa
            e_in = self.input_error * xa.norm(dim=1)
        return xa, xb @ self.weights_bf16, e_in

    def _exact(self, xa: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Float32 ``xa[rows] . columns[cols]`` for row-major (rows, cols)."""
        counts = torch.bincount(rows, minlength=len(xa))
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            mask = torch.sparse_csr_tensor(
                crow,
                cols,
                xa.new_zeros(len(cols)),
                (len(xa), self.n_features),
                check_invariants=False,
            )
            return torch.sparse.sampled_addmm(mask, xa, self.columns.T).values()


def _reaching(s: torch.Tensor, bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major (rows, cols) of the entries whose exact value can reach ``bound`` (B,), a
    per-row bound already lowered by the input error (see :func:`_below`)."""
    rows, cols = _at_least(s, _below(bound)).nonzero(as_tuple=True)
    return rows, cols


def _at_least(s: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """``s >= cutoff[:, None]`` for bfloat16 ``s``; on int16 bit patterns when every cutoff is
    positive (positive bfloat16 values order like their bits, negative ones lie below)."""
    c = cutoff[:, None].bfloat16()
    if bool((c > 0).all()):
        return s.view(torch.int16) >= c.view(torch.int16)
    return s >= c


def _below(y: torch.Tensor) -> torch.Tensor:
    """The screen cutoff for an exact bound ``y``: the least ``s`` with
    ``s + u/(1-u) |s| >= y`` (every entry whose upper bound reaches ``y`` has ``s >= cutoff``),
    lowered by one bfloat16 step so that rounding the cutoff cannot drop an entry."""
    r = UNIT / (1 - UNIT)
    c = torch.where(y >= 0, y / (1 + r), y / (1 - r))
    return c - c.abs() * 2 * UNIT - torch.finfo(torch.float32).tiny


def _row_topk(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k largest of the row-major entries (every row has at least k)."""
    counts = torch.bincount(rows, minlength=n_rows)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(rows)) - start[rows]
    width = int(counts.max())
    padded = vals.new_full((n_rows, width), -torch.inf).index_put_((rows, pos), vals)
    top = padded.topk(k, dim=1, sorted=False)
    padded_cols = cols.new_zeros((n_rows, width)).index_put_((rows, pos), cols)
    return padded_cols.gather(1, top.indices), top.values
