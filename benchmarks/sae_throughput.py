"""TopK SAE training throughput: monoscope vs a plain PyTorch loop vs SAELens, as ratios of a
plain fp32 matmul timed in the same run.

Setting (ENVIRONMENT.md "Speed"): d 512, 8192 latents, k 32, batch 4096, fp32, Adam. One
training step costs 6 matmuls of 2*B*d*K FLOPs (encoder and decoder forward; decoder weight and
code gradients; encoder weight and input gradients, the latter needed for b_pre), i.e.
12*B*d*K FLOPs; achieved GFLOP/s = that / step time, and the ratio divides it by the GFLOP/s
of a 4096 x 4096 fp32 matmul. Timings of the contenders are interleaved round by round and
the median round is reported, so all ratios share the machine's conditions. SAELens runs in its
own venv (``--saelens-python``, default /tmp/saelens-venv/bin/python), timing its own matmul.

    python benchmarks/sae_throughput.py [--rounds 5] [--saelens-python PATH] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

D, K, TOPK, B = 512, 8192, 32, 4096
STEP_FLOPS = 12 * B * D * K


def matmul_gflops(n: int = 4096, reps: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def monoscope_step():
    """One sae-topk training step exactly as train_featuremap runs it (no dead latents)."""
    from monoscope.featuremaps.sae import TopKSAE

    x = torch.randn(B, D)
    sae = TopKSAE(D, K, k=TOPK)
    sae.init_from_data({"x": x}, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    dead = torch.zeros(K, dtype=torch.bool)
    batch = {"x": x}

    def step() -> None:
        loss, _ = sae.train_loss(batch, dead)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.constrain_grads()
        opt.step()
        sae.constrain_params()
        float(loss.detach())

    return step


def plain_step():
    """A minimal TopK SAE step in plain PyTorch (same math, no unit-norm or AuxK bookkeeping)."""
    g = torch.Generator().manual_seed(0)
    w_dec = torch.nn.functional.normalize(torch.randn(K, D, generator=g), dim=1)
    params = {
        "w_enc": w_dec.T.clone().requires_grad_(),
        "b_enc": torch.zeros(K, requires_grad=True),
        "w_dec": w_dec.requires_grad_(),
        "b_dec": torch.zeros(D, requires_grad=True),
    }
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    x = torch.randn(B, D)

    def step() -> None:
        xs = x - params["b_dec"]
        pre = xs @ params["w_enc"] + params["b_enc"]
        vals, idx = pre.topk(TOPK, dim=-1, sorted=False)
        z = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        loss = torch.nn.functional.mse_loss(z @ params["w_dec"] + params["b_dec"], x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())

    return step


def time_step(step, reps: int = 2) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t) / reps


def stream_rate(tmp: Path) -> float:
    """Embeddings/s that the shard-buffered stream of train_featuremap delivers (d 512)."""
    from monoscope.analysis.planted import write_planted_store
    from monoscope.featuremaps.train import _Stream

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((32768, D)).astype(np.float32)
    store = write_planted_store(tmp / "store", emb, emb[::-1].copy(), shard_size=8192)
    stream = _Stream(store, "mixed", B, 0, 16384)
    t = time.perf_counter()
    n = sum(len(b["x"]) for b in stream.epoch(0))
    return n / (time.perf_counter() - t)


SAELENS_WORKER = r"""
import json, statistics, sys, time, torch
import sae_lens
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput
D, K, TOPK, B, rounds = 512, 8192, 32, 4096, int(sys.argv[1])
cfg = TopKTrainingSAEConfig(d_in=D, d_sae=K, k=TOPK, dtype="float32", device="cpu")
sae = TopKTrainingSAE(cfg)
opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
x = torch.randn(B, D)
dead = torch.zeros(K, dtype=torch.bool)
def step():
    out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False))
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    float(out.loss.detach())
def mm():
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096); a @ b
    t = time.perf_counter()
    for _ in range(3): a @ b
    return 2 * 4096**3 * 3 / (time.perf_counter() - t) / 1e9
step()
res = {"matmul": [], "step": []}
for _ in range(rounds):
    res["matmul"].append(mm())
    t = time.perf_counter(); step(); step(); res["step"].append((time.perf_counter() - t) / 2)
print(json.dumps({"version": sae_lens.__version__, **{k: statistics.median(v) for k, v in res.items()}}))
"""


def saelens(python: str, rounds: int) -> dict:
    """Run the SAELens worker in its venv; {"error": why} if it cannot run."""
    if not Path(python).exists():
        return {"error": f"{python} not found"}
    proc = subprocess.run(
        [python, "-c", SAELENS_WORKER, str(rounds)], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--saelens-python", default="/tmp/saelens-venv/bin/python")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    steps = {"monoscope": monoscope_step(), "plain": plain_step()}
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {"matmul": [], **{name: [] for name in steps}}
    for _ in range(args.rounds):
        times["matmul"].append(matmul_gflops())
        for name, step in steps.items():
            times[name].append(time_step(step))
    peak = statistics.median(times["matmul"])
    rows = {}
    for name in steps:
        t = statistics.median(times[name])
        gflops = STEP_FLOPS / t / 1e9
        rows[name] = {"samples_per_s": B / t, "gflops": gflops, "ratio_of_matmul": gflops / peak}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        stream = stream_rate(Path(tmp))
    lens = saelens(args.saelens_python, args.rounds)
    if "step" in lens:
        gflops = STEP_FLOPS / lens["step"] / 1e9
        lens.update(
            samples_per_s=B / lens["step"],
            gflops=gflops,
            ratio_of_matmul=gflops / lens["matmul"],
        )
    result = {
        "setting": {"d": D, "latents": K, "k": TOPK, "batch": B, "dtype": "float32"},
        "threads": torch.get_num_threads(),
        "matmul_gflops": peak,
        **rows,
        "stream_embeddings_per_s": stream,
        "saelens": lens,
    }
    if "samples_per_s" in lens:
        result["monoscope_vs_saelens"] = rows["monoscope"]["samples_per_s"] / lens["samples_per_s"]
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
