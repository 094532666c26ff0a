"""GPU benchmark in one invocation: every figure is a ratio to something timed in the same run.

    python benchmarks/gpu.py                    # one GPU (sized for an H200: a few minutes)
    python benchmarks/gpu.py --small            # reduced sizes on CPU, a few seconds (tested)
    python benchmarks/gpu.py --fetch-wheels     # on a machine with a registry: fill .whl/

Sections:

1. **peak**: fp32 and bf16 square-matmul TFLOP/s (the rooflines of the other sections).
2. **embed**: random ViT-B/32 and ViT-L/14 ``CLIPModel`` in bf16 and fp16; ``embed`` from
   JPEG files (decode, preprocess, tokenise, forward, write the store) vs the bare forward
   loop on tensors already on the device; ratio = embed pairs/s / bare pairs/s.
3. **sae**: one ``sae-topk`` training step (d 768, 32,768 latents, k 64, batch 16,384, fp32
   Adam) with the dense and the sparse decoder, interleaved; dense-equivalent TFLOP/s
   (12 B d K per step) as a fraction of the fp32 and the bf16 peak, and sparse / dense.
4. **analysis**: ``monoscope.api.analyze`` (defaults: 200 bootstrap replicates, ...) at 32,768
   features on a synthetic store; pairs/s and the encoder GEMMs' share of the fp32 peak.
5. **ddp**: ``train_featuremap`` under ``torchrun --nproc_per_node=1``, which forms a process
   group even with one process and runs every collective (NCCL on CUDA, gloo on CPU), vs the
   same call in a plain process; ratio of the training times.

Missing Python packages are installed first from the wheels in ``.whl/`` (ignored by git;
``--fetch-wheels`` downloads them on a machine that reaches a registry), never from a network.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
# import name -> distribution; torch must already be there (a CUDA build does not fit in .whl)
NEEDED = {
    "numpy": "numpy",
    "safetensors": "safetensors",
    "tqdm": "tqdm",
    "PIL": "pillow",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
}
FULL = {
    "peak_n": 8192,
    "embed": [
        ("ViT-B/32", {}, {}, 512, 4096, 256),
        (
            "ViT-L/14",
            {
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "patch_size": 14,
            },
            {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
            768,
            2048,
            256,
        ),
    ],
    "dtypes": ("bf16", "fp16"),
    "workers": (0, 8),
    "sae": {"d": 768, "latents": 32768, "k": 64, "batch": 16384, "steps": 5, "rounds": 3},
    "analysis": {"pairs": 32768, "d": 768, "latents": 32768, "k": 64},
    "ddp": {"steps": 30},
}
_TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
SMALL = {
    "peak_n": 256,
    "embed": [("tiny", {**_TINY, "image_size": 32, "patch_size": 8}, _TINY, 16, 32, 16)],
    "dtypes": ("bf16",),
    "workers": (0,),
    "sae": {"d": 32, "latents": 256, "k": 8, "batch": 256, "steps": 2, "rounds": 2},
    "analysis": {"pairs": 512, "d": 32, "latents": 256, "k": 8},
    "ddp": {"steps": 3},
}


def ensure_packages() -> None:
    """Install missing packages from .whl/ (offline); put src/ on the path if need be."""
    missing = [dist for mod, dist in NEEDED.items() if importlib.util.find_spec(mod) is None]
    if missing:
        if not WHEELS.is_dir():
            sys.exit(f"missing {', '.join(missing)} and no {WHEELS} to install them from")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--find-links",
                str(WHEELS),
                *missing,
            ],
            check=True,
        )
    if importlib.util.find_spec("monoscope") is None:
        sys.path.insert(0, str(ROOT / "src"))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        )
    sys.path.insert(0, str(ROOT / "benchmarks"))


def fetch_wheels() -> None:
    WHEELS.mkdir(exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            "--dest",
            str(WHEELS),
            *NEEDED.values(),
        ],
        check=True,
    )


class Clock:
    """Wall time with the device synchronised at both ends."""

    def __init__(self, device: str):
        import torch

        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def __call__(self, fn, reps: int = 1) -> float:
        self.sync()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        self.sync()
        return (time.perf_counter() - t) / reps


def peaks(clock: Clock, device: str, n: int) -> dict[str, float]:
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        out[name] = 2 * n**3 / clock(lambda a=a, b=b: a @ b, reps=5) / 1e12
    return out


def bench_embed(clock: Clock, device: str, size: dict, tmp: Path) -> list[dict]:
    import torch
    from embed_throughput import make_model, make_pairs
    from transformers import CLIPProcessor

    from monoscope.embed import embed
    from monoscope.encoders import load_encoder
    from monoscope.encoders.hf import projected

    rows = []
    for name, vision, text, proj, n, bs in size["embed"]:
        model_dir = make_model(tmp / f"model-{len(rows)}", vision, text, proj)
        data = make_pairs(tmp / f"data-{len(rows)}", n)
        proc = CLIPProcessor.from_pretrained(model_dir)
        records = [json.loads(line) for line in data.read_text().splitlines()]
        from PIL import Image

        images = [Image.open(data.parent / r["image"]).convert("RGB") for r in records]
        for dtype in size["dtypes"]:
            encoder = load_encoder(str(model_dir), device=device, dtype=dtype)
            model = encoder.model
            batches = []
            for lo in range(0, n, bs):
                px = proc(images=images[lo : lo + bs], return_tensors="pt")["pixel_values"]
                tk = proc(
                    text=[r["caption"] for r in records[lo : lo + bs]],
                    padding=True,
                    truncation=True,
                    return_tensors="pt",
                )
                batches.append(
                    (px.to(device, model.dtype), {k: v.to(device) for k, v in tk.items()})
                )

            def bare(model=model, batches=batches) -> None:
                with torch.inference_mode():
                    for px, tk in batches:
                        projected(model.get_image_features(pixel_values=px))
                        projected(model.get_text_features(**tk))

            bare()  # warm-up
            row = {
                "model": name,
                "dtype": dtype,
                "pairs": n,
                "batch": bs,
                "bare_pairs_per_s": n / clock(bare),
            }
            for workers in size["workers"]:
                run = functools.partial(
                    embed,
                    encoder,
                    str(data),
                    tmp / "store",
                    batch_size=bs,
                    workers=workers,
                    device=device,
                    overwrite=True,
                    progress=False,
                )
                row[f"embed_w{workers}_ratio"] = n / clock(run) / row["bare_pairs_per_s"]
            rows.append(row)
            del encoder, model, batches
    return rows


def bench_sae(clock: Clock, device: str, cfg: dict, peak: dict) -> dict:
    import torch

    from monoscope.featuremaps.sae import TopKSAE

    d, lat, k, b = cfg["d"], cfg["latents"], cfg["k"], cfg["batch"]
    x = torch.randn(b, d, device=device)
    steps = {}
    for decoder in ("dense", "sparse"):
        sae = TopKSAE(d, lat, k=k, decoder=decoder).to(device)
        sae.init_from_data({"x": x}, torch.Generator().manual_seed(0))
        opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
        dead = torch.zeros(lat, dtype=torch.bool, device=device)

        def step(sae=sae, opt=opt, dead=dead) -> None:
            loss, _, _ = sae.train_loss({"x": x}, dead)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sae.constrain_grads()
            opt.step()
            sae.constrain_params()

        step()
        steps[decoder] = step
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(cfg["rounds"]):
        for name, step in steps.items():
            times[name].append(clock(step, reps=cfg["steps"]))
    flops = 12 * b * d * lat
    out = {"setting": {k_: cfg[k_] for k_ in ("d", "latents", "k", "batch")}}
    for name, ts in times.items():
        t = sorted(ts)[len(ts) // 2]
        tflops = flops / t / 1e12
        out[name] = {
            "samples_per_s": b / t,
            "dense_equiv_tflops": tflops,
            "of_fp32_peak": tflops / peak["fp32"],
            "of_bf16_peak": tflops / peak["bf16"],
        }
    out["sparse_over_dense"] = out["sparse"]["samples_per_s"] / out["dense"]["samples_per_s"]
    return out


def bench_analysis(clock: Clock, device: str, cfg: dict, peak: dict, tmp: Path) -> dict:
    import torch
    from analysis_streaming import make_store  # beside this script

    from monoscope import api
    from monoscope.featuremaps.sae import TopKSAE

    store = make_store(tmp / "astore", cfg["pairs"], dim=cfg["d"])
    torch.manual_seed(0)
    sae = TopKSAE(cfg["d"], cfg["latents"], k=cfg["k"])
    with torch.no_grad():
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn_like(sae.W_dec), dim=1))
        sae.W_enc.copy_(sae.W_dec.T)
    fmap = sae.save(tmp / "afmap")
    t = clock(lambda: api.analyze(store, fmap, tmp / "analysis", device=device, progress=False))
    encode_tflops = 2 * 2 * cfg["d"] * cfg["latents"] * cfg["pairs"] / t / 1e12
    return {
        **cfg,
        "pairs_per_s": cfg["pairs"] / t,
        "encode_of_fp32_peak": encode_tflops / peak["fp32"],
    }


def ddp_child(args: list[str]) -> None:
    """Under torchrun: train and print the training time (rank 0)."""
    store, out, device, opts = args[0], args[1], args[2], json.loads(args[3])
    from monoscope.featuremaps.train import train_featuremap

    t = time.perf_counter()
    train_featuremap(store, "sae-topk", out, device=device, progress=False, **opts)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"seconds": time.perf_counter() - t}))


def bench_ddp(device: str, size: dict, tmp: Path) -> dict:
    """The same training in two fresh processes: under torchrun and plain."""
    import torch

    sae = size["sae"]
    opts = {
        "latents": sae["latents"],
        "k": sae["k"],
        "batch_size": sae["batch"],
        "steps": size["ddp"]["steps"],
        "checkpoint_every": 0,
        "overwrite": True,
    }
    threads = torch.get_num_threads()
    seconds = {}
    for launcher in ("torchrun", "plain"):
        args = [str(tmp / "astore"), str(tmp / launcher), device, json.dumps(opts)]
        cmd = [sys.executable, __file__, "--ddp-child", *args]
        if launcher == "torchrun":
            cmd[1:1] = ["-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torchrun would set 1
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        if proc.returncode:
            return {"error": f"{launcher}: " + (proc.stderr.strip().splitlines() or ["?"])[-1]}
        seconds[launcher] = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    return {
        "backend": "nccl" if device.startswith("cuda") else "gloo",
        "torchrun_seconds": seconds["torchrun"],
        "plain_seconds": seconds["plain"],
        "plain_over_torchrun": seconds["plain"] / seconds["torchrun"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="reduced sizes on CPU (the test)")
    ap.add_argument("--fetch-wheels", action="store_true")
    ap.add_argument("--only", nargs="*", default=["peak", "embed", "sae", "analysis", "ddp"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--ddp-child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.fetch_wheels:
        fetch_wheels()
        return
    ensure_packages()
    import torch

    if a.ddp_child:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        ddp_child(a.ddp_child)
        return

    size = SMALL if a.small else FULL
    device = "cpu" if a.small else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --small for the reduced CPU mode")
    if a.small:
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"
    clock = Clock(device)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    result: dict = {"device": name, "torch": torch.__version__, "small": a.small}
    t0 = time.perf_counter()
    result["peak_tflops"] = peak = peaks(clock, device, size["peak_n"])
    print(json.dumps({"peak_tflops": peak}), flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sections = {
            "embed": lambda: bench_embed(clock, device, size, tmp),
            "sae": lambda: bench_sae(clock, device, size["sae"], peak),
            "analysis": lambda: bench_analysis(clock, device, size["analysis"], peak, tmp),
            "ddp": lambda: bench_ddp(device, size, tmp),
        }
        for key, run in sections.items():
            if key in a.only and (key != "ddp" or "analysis" in a.only):
                t = time.perf_counter()
                result[key] = run()
                print(
                    json.dumps({key: result[key], "seconds": time.perf_counter() - t}), flush=True
                )
    result["seconds"] = time.perf_counter() - t0
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
