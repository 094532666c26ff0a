"""TopK SAE training against peer libraries: step throughput in one run with interleaved rounds,
and quality at an equal budget of samples on the same data.

Setting: d 512, 8,192 latents, k 32, batch 4,096, fp32, Adam, ``--threads`` (2) threads per
process. Contenders: monoscope's ``sae-topk`` with the dense and the sparse decoder, SAELens,
EleutherAI sparsify and overcomplete, each a worker process (benchmarks/sae_peer_worker.py) in
the environment where its library installs; the peers' environments are separate so that each
gets ``torch==2.13.0`` on the same pip line (overcomplete needs torchvision, which does not load
beside the CPU torch wheel, so its environment has torch 2.14.1 + torchvision 0.29.1, and
overcomplete 0.3.0 calls ``plt.cm.get_cmap``, gone from matplotlib 3.9 on):

    python -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0 sae-lens eai-sparsify
    python -m venv .venv-overcomplete && .venv-overcomplete/bin/pip install torch==2.14.1 \\
        torchvision==0.29.1 overcomplete "matplotlib<3.9"

Throughput: all workers are started first and wait; then each round times ``--reps`` steps of
every contender in turn (the order rotates from round to round) and one fp32 4096^2 matmul in
this process, so every number shares the machine's conditions; medians over ``--rounds``.
A dense-equivalent step costs 12 B d K FLOPs; the ratio to the matmul's GFLOP/s is reported.

Quality: every contender trains a fresh SAE with its library's default learning rate for
``--quality-steps`` steps on the same rows (a synthetic sparse dictionary dataset, d 512,
``--atoms`` atoms; peers read the rows in the stored order, monoscope through
``train_featuremap`` on a store of the same rows), then held-out FVU, L0 and the fraction of
latents that fire on no held-out row are measured the same way for all.

    python benchmarks/sae_throughput.py [--rounds 5] [--quality-steps 64] [--json OUT]
    python benchmarks/sae_throughput.py --crossover   # sparse / dense step time against K / k

``--crossover`` times monoscope's dense and sparse ``sae-topk`` steps in this process at
k 32 and K in 64..8192 (d 512, batch 4,096, interleaved rounds, medians): the measurement
behind the CPU value of ``monoscope.featuremaps.sparse.SPARSE_FROM_RATIO``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("sae_peer_worker.py")
CONFIG = {"d": 512, "latents": 8192, "k": 32, "batch": 4096}
ENVS = {
    "monoscope-dense": sys.executable,
    "monoscope-sparse": sys.executable,
    "saelens": str(ROOT / ".venv-bench/bin/python"),
    "sparsify": str(ROOT / ".venv-bench/bin/python"),
    "overcomplete": str(ROOT / ".venv-overcomplete/bin/python"),
}


def matmul_gflops(n: int = 4096, reps: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def dictionary_data(n: int, d: int, atoms: int, seed: int = 0) -> np.ndarray:
    """n unit rows, each a lognormal-weighted sum of ~8 of ``atoms`` random unit atoms (picked
    with Zipf-like frequencies) plus small isotropic noise: data a sparse dictionary explains."""
    rng = np.random.default_rng(seed)
    dictionary = rng.standard_normal((atoms, d)).astype(np.float32)
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    p = 1.0 / np.arange(1, atoms + 1) ** 0.7
    picks = rng.choice(atoms, size=(n, 8), p=p / p.sum())
    mags = np.exp(0.5 * rng.standard_normal((n, 8))).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 8192):
        sl = slice(lo, lo + 8192)
        x[sl] = np.einsum("nk,nkd->nd", mags[sl], dictionary[picks[sl]])
    x += 0.05 / np.sqrt(d) * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Worker:
    """A contender's process; ``error`` says why it could not start."""

    def __init__(self, name: str, python: str, cfg: dict):
        self.name, self.error, self.version, self.proc = name, None, None, None
        if not Path(python).exists():
            self.error = f"{python} not found"
            return
        self.proc = subprocess.Popen(
            [python, str(WORKER), name, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        reply = self._read()
        if "error" in reply:
            self.error = reply["error"]
            self.proc.wait()
            self.proc = None
        else:
            self.version = reply["version"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"worker exited with status {self.proc.wait()}"}
        return json.loads(line)

    def ask(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc is not None:
            self.ask(cmd="quit")
            self.proc.wait()


def crossover(rounds: int, latents=(64, 128, 256, 512, 1024, 8192), k: int = 32) -> dict:
    from monoscope.featuremaps.sae import TopKSAE

    x = torch.randn(CONFIG["batch"], CONFIG["d"])
    out = {}
    for n_lat in latents:
        steps = {}
        for decoder in ("dense", "sparse"):
            sae = TopKSAE(CONFIG["d"], n_lat, k=k, decoder=decoder)
            sae.init_from_data({"x": x}, torch.Generator().manual_seed(0))
            opt = torch.optim.Adam(sae.parameters(), lr=1e-3)

            def step(sae=sae, opt=opt) -> None:
                loss, _, _ = sae.train_loss({"x": x})
                opt.zero_grad(set_to_none=True)
                loss.backward()
                sae.constrain_grads()
                opt.step()
                sae.constrain_params()

            step()
            steps[decoder] = step
        times: dict[str, list[float]] = {"dense": [], "sparse": []}
        for _ in range(rounds):
            for name, step in steps.items():
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
        ratio = statistics.median(times["dense"]) / statistics.median(times["sparse"])
        out[f"K/k={n_lat // k}"] = {"latents": n_lat, "sparse_speedup": ratio}
        print(json.dumps(out[f"K/k={n_lat // k}"]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=2, help="steps per contender and round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality-steps", type=int, default=64, help="0: skip quality")
    parser.add_argument("--atoms", type=int, default=4096)
    parser.add_argument("--only", nargs="*", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--crossover", action="store_true", help="only the dense/sparse rule")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.crossover:
        result = {
            "threads": args.threads,
            "rounds": args.rounds,
            "k": 32,
            "crossover": crossover(args.rounds),
        }
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return
    cfg = {**CONFIG, "threads": args.threads}
    workers = [Worker(name, ENVS[name], cfg) for name in args.only]
    live = [w for w in workers if w.error is None]
    times: dict[str, list[float]] = {w.name: [] for w in live}
    peaks = []
    for r in range(args.rounds):
        peaks.append(matmul_gflops())
        for w in live[r % len(live) :] + live[: r % len(live)]:
            times[w.name].append(w.ask(cmd="time", reps=args.reps)["seconds"])
    peak = statistics.median(peaks)
    b, flops = cfg["batch"], 12 * cfg["batch"] * cfg["d"] * cfg["latents"]
    rows: dict[str, dict] = {}
    for w in workers:
        if w.error is not None:
            rows[w.name] = {"error": w.error}
            continue
        t = statistics.median(times[w.name])
        rows[w.name] = {
            "version": w.version,
            "samples_per_s": b / t,
            "ratio_of_matmul": flops / t / 1e9 / peak,
        }
    if args.quality_steps:
        n_train = args.quality_steps * b
        with tempfile.TemporaryDirectory() as tmp:
            from monoscope.analysis.planted import write_planted_store

            x = dictionary_data(n_train + 8192, cfg["d"], args.atoms)
            np.save(Path(tmp) / "train.npy", x[:n_train])
            np.save(Path(tmp) / "heldout.npy", x[n_train:])
            (Path(tmp) / "config.json").write_text(json.dumps(cfg))
            half = n_train // 2
            write_planted_store(Path(tmp) / "store", x[:half], x[half:n_train])
            for w in live:
                rows[w.name]["quality"] = w.ask(cmd="quality", dir=tmp, steps=args.quality_steps)
    for w in live:
        w.close()
    ratios = {}
    base = rows.get("monoscope-sparse", {}).get("samples_per_s")
    for name, row in rows.items():
        if base and "samples_per_s" in row and name != "monoscope-sparse":
            ratios[f"monoscope-sparse / {name}"] = base / row["samples_per_s"]
    result = {
        "setting": {**cfg, "dtype": "float32", "optimizer": "Adam"},
        "rounds": args.rounds,
        "reps": args.reps,
        "matmul_gflops": peak,
        "matmul_gflops_range": [min(peaks), max(peaks)],
        "quality_samples": args.quality_steps * b,
        "contenders": rows,
        "ratios": ratios,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
