"""The TopK encoder of the analysis pass: the bfloat16 screen against the float32 GEMM.

For d = 512, k = 32 and each number of latents, times (interleaved rounds, medians, one thread)
the exact top-k of 4,096 rows by the float32 GEMM + ``topk`` and by
:class:`monoscope.analysis.screen.ScreenedPreActs`, on a random map (unit encoder columns, no
bias: pre-activations packed near the k-th value, the screen's worst case) and on one with
spread column norms and biases. Prints seconds, the ratio and the screen's mean candidates
per row; the crossover sets ``MIN_LATENTS``.

    python benchmarks/analysis_screen.py --latents 1024 2048 4096 8192 16384
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from monoscope.analysis.screen import ScreenedPreActs, screen_pays

DIM, K, ROWS, BLOCK = 512, 32, 4096, 1024


def dense_topk(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> None:
    for lo in range(0, len(x), BLOCK):
        torch.addmm(b, x[lo : lo + BLOCK], w).topk(K, dim=1, sorted=False)


def screened_topk(x: torch.Tensor, screen: ScreenedPreActs) -> None:
    for lo in range(0, len(x), BLOCK):
        screen.topk(x[lo : lo + BLOCK], K)


def candidates(x: torch.Tensor, screen: ScreenedPreActs) -> float:
    """Mean candidates per row of the screen."""
    _, rows, _ = screen.topk_candidates(x[:BLOCK], K)
    return len(rows) / BLOCK


def seconds(fn: Callable[..., None], *args: object) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--latents", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(ROWS, DIM, generator=g), dim=1)
    print(
        f"d {DIM}, k {K}, {ROWS} rows, 1 thread; screen_pays(cpu, 8192) = {screen_pays('cpu', 8192)}"
    )
    print(f"{'map':<10}{'latents':>8}{'float32 s':>11}{'screen s':>10}{'ratio':>7}{'cands':>7}")
    for n_lat in a.latents:
        unit = torch.nn.functional.normalize(torch.randn(DIM, n_lat, generator=g), dim=0)
        maps = {
            "random": (unit, torch.zeros(n_lat)),
            "spread": (unit * (0.5 + torch.rand(n_lat, generator=g)), -0.05 * torch.rand(n_lat)),
        }
        for name, (w, b) in maps.items():
            screen = ScreenedPreActs(w, b)
            dense_topk(x, w, b), screened_topk(x, screen)  # warm-up
            t_dense, t_screen = [], []
            for _ in range(a.rounds):  # interleaved
                t_dense.append(seconds(dense_topk, x, w, b))
                t_screen.append(seconds(screened_topk, x, screen))
            td, ts = statistics.median(t_dense), statistics.median(t_screen)
            print(
                f"{name:<10}{n_lat:>8}{td:>11.3f}{ts:>10.3f}{td / ts:>7.2f}"
                f"{candidates(x, screen):>7.1f}"
            )


if __name__ == "__main__":
    main()
