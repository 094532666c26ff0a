"""One contender of benchmarks/sae_throughput.py, run in the environment where its library is
installed (standalone: torch and numpy only, plus that library).

    python sae_peer_worker.py LIBRARY CONFIG_JSON

LIBRARY: monoscope-dense, monoscope-sparse, saelens, sparsify or overcomplete. The worker builds
a TopK SAE of the configuration (d, latents, k, batch, threads), prints one JSON line
(``{"ready": true, "version": ...}`` or ``{"error": ...}``) and then answers JSON commands on
stdin, one per line, each with one JSON line:

- ``{"cmd": "time", "reps": n}``: seconds per training step (forward, backward, Adam and the
  library's own decoder-norm bookkeeping) on a fixed random batch, the mean of n steps.
- ``{"cmd": "quality", "dir": DIR, "steps": n}``: train a fresh SAE with the library's default
  learning rate for n steps on DIR/train.npy (row order as stored, batch after batch), then
  report held-out FVU, L0 and the fraction of latents that never fire on DIR/heldout.npy.
  monoscope trains through its own ``train_featuremap`` on the store DIR/store (same rows).
- ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

Step = Callable[[torch.Tensor], None]
Codec = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # x -> (codes, x_hat)


def build_monoscope(cfg: dict, decoder: str) -> tuple[Step, Callable[[Path, int], Codec]]:
    from monoscope.featuremaps.sae import TopKSAE
    from monoscope.featuremaps.train import default_lr

    sae = TopKSAE(cfg["d"], cfg["latents"], k=cfg["k"], decoder=decoder)
    x0 = torch.randn(cfg["batch"], cfg["d"])
    sae.init_from_data({"x": x0}, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(sae.parameters(), lr=default_lr("sae-topk", cfg["d"]))
    dead = torch.zeros(cfg["latents"], dtype=torch.bool)

    def step(x: torch.Tensor) -> None:
        loss, _, _ = sae.train_loss({"x": x}, dead)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.constrain_grads()
        opt.step()
        sae.constrain_params()
        float(loss.detach())

    def quality(directory: Path, steps: int) -> Codec:
        import tempfile

        from monoscope.featuremaps import load_featuremap
        from monoscope.featuremaps.train import train_featuremap

        with tempfile.TemporaryDirectory() as tmp:
            out = train_featuremap(
                directory / "store",
                "sae-topk",
                Path(tmp) / "map",
                latents=cfg["latents"],
                k=cfg["k"],
                batch_size=cfg["batch"],
                steps=steps,
                decoder=decoder,
                checkpoint_every=0,
                progress=False,
            )
            fmap = load_featuremap(out)

        def codec(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z = fmap.encode(x)
            return z, fmap.decode(z)

        return codec

    return step, quality


def build_saelens(cfg: dict) -> tuple[Step, Callable[[Path, int], Codec]]:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    def make():
        sae_cfg = TopKTrainingSAEConfig(
            d_in=cfg["d"], d_sae=cfg["latents"], k=cfg["k"], dtype="float32", device="cpu"
        )
        sae = TopKTrainingSAE(sae_cfg)
        opt = torch.optim.Adam(sae.parameters(), lr=3e-4)  # LanguageModelSAERunnerConfig.lr
        dead = torch.zeros(cfg["latents"], dtype=torch.bool)

        def step(x: torch.Tensor) -> None:
            out = sae.training_forward_pass(
                TrainStepInput(
                    sae_in=x,
                    coefficients={},
                    dead_neuron_mask=dead,
                    n_training_steps=0,
                    is_logging_step=False,
                )
            )
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            float(out.loss.detach())

        def codec(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z = sae.encode(x)
            return z, sae.decode(z)

        return step, codec

    return _generic(make)


def build_sparsify(cfg: dict) -> tuple[Step, Callable[[Path, int], Codec]]:
    from sparsify import SparseCoder
    from sparsify.config import SparseCoderConfig

    def make():
        sae = SparseCoder(cfg["d"], SparseCoderConfig(num_latents=cfg["latents"], k=cfg["k"]))
        lr = 2e-4 / (cfg["latents"] / 2**14) ** 0.5  # sparsify's Trainer default for Adam
        opt = torch.optim.Adam(sae.parameters(), lr=lr)

        def step(x: torch.Tensor) -> None:
            out = sae(x)
            opt.zero_grad(set_to_none=True)
            out.fvu.backward()
            sae.remove_gradient_parallel_to_decoder_directions()
            opt.step()
            sae.set_decoder_norm_to_unit_norm()
            float(out.fvu.detach())

        def codec(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = sae(x)
            z = torch.zeros(len(x), cfg["latents"]).scatter_(1, out.latent_indices, out.latent_acts)
            return z, out.sae_out

        return step, codec

    return _generic(make)


def build_overcomplete(cfg: dict) -> tuple[Step, Callable[[Path, int], Codec]]:
    from overcomplete.sae import TopKSAE

    def make():
        sae = TopKSAE(cfg["d"], nb_concepts=cfg["latents"], top_k=cfg["k"], device="cpu")
        opt = torch.optim.Adam(sae.parameters(), lr=5e-4)  # the lr of overcomplete's examples

        def step(x: torch.Tensor) -> None:
            _, z, x_hat = sae(x)
            loss = (x - x_hat).square().mean()  # a plain mse criterion (TopK needs no penalty)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)  # train_sae's default
            opt.step()
            float(loss.detach())

        def codec(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            _, z, x_hat = sae(x)
            return z, x_hat

        return step, codec

    return _generic(make)


def _generic(make) -> tuple[Step, Callable[[Path, int], Codec]]:
    step, _ = make()

    def quality(directory: Path, steps: int) -> Codec:
        torch.manual_seed(0)
        train_step, codec = make()
        data = torch.from_numpy(np.load(directory / "train.npy"))
        b = int(json.loads((directory / "config.json").read_text())["batch"])
        for i in range(steps):
            lo = (i * b) % (len(data) - b + 1)
            train_step(data[lo : lo + b])
        return codec

    return step, quality


def _versions(library: str) -> str:
    from importlib.metadata import version

    name = {"saelens": "sae-lens", "sparsify": "eai-sparsify", "overcomplete": "overcomplete"}
    return version(name.get(library, "monoscope")) + f" (torch {torch.__version__})"


@torch.no_grad()
def _score(codec: Codec, heldout: np.ndarray) -> dict[str, float]:
    x = torch.from_numpy(heldout)
    err = var = l0 = 0.0
    fired = None
    mean = x.mean(0)
    for lo in range(0, len(x), 1024):
        chunk = x[lo : lo + 1024]
        z, x_hat = codec(chunk)
        err += float((chunk - x_hat).square().sum())
        var += float((chunk - mean).square().sum())
        l0 += float((z > 0).sum())
        hit = (z > 0).any(0)
        fired = hit if fired is None else fired | hit
    return {"fvu": err / var, "l0": l0 / len(x), "dead_fraction": float(1 - fired.float().mean())}


def main() -> None:
    library, cfg = sys.argv[1], json.loads(sys.argv[2])
    out = os.fdopen(os.dup(1), "w")  # the replies; whatever the libraries print goes to stderr
    os.dup2(2, 1)

    def reply(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    builders = {
        "monoscope-dense": lambda: build_monoscope(cfg, "dense"),
        "monoscope-sparse": lambda: build_monoscope(cfg, "sparse"),
        "saelens": lambda: build_saelens(cfg),
        "sparsify": lambda: build_sparsify(cfg),
        "overcomplete": lambda: build_overcomplete(cfg),
    }
    try:
        step, quality = builders[library]()
        version = _versions(library)
    except Exception as e:  # a library that does not install or import here is reported
        reply({"error": f"{type(e).__name__}: {e}"})
        return
    x = torch.randn(cfg["batch"], cfg["d"])
    step(x)  # warm-up
    reply({"ready": True, "version": version})
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "time":
            t = time.perf_counter()
            for _ in range(msg["reps"]):
                step(x)
            reply({"seconds": (time.perf_counter() - t) / msg["reps"]})
        elif msg["cmd"] == "quality":
            directory = Path(msg["dir"])
            t = time.perf_counter()
            codec = quality(directory, msg["steps"])
            seconds = time.perf_counter() - t
            reply({**_score(codec, np.load(directory / "heldout.npy")), "seconds": seconds})
        else:
            return


if __name__ == "__main__":
    main()
