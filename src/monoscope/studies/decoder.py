"""A small embedding-conditioned image decoder, to render steered image embeddings.

A transposed-convolution generator from an image embedding (the store's space) to RGB at
32x32 or 64x64: a linear layer to a 4x4 grid of ``width`` channels, then stride-2 transposed
convolutions (BatchNorm, ReLU) halving the channels while doubling the resolution, and a 3x3
convolution with a sigmoid. Trained on a store's images (the bundled emoji for the demo) with
MSE plus an L1 loss on image gradients (sharper edges) and Gaussian noise on the input
embeddings (so off-manifold, steered embeddings still decode to plausible images). Saved as
``model.safetensors`` + ``config.json``; ``monoscope decoder train`` makes one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .._util import (
    MonoscopeError,
    atomic_write,
    read_json,
    resolve_device,
    seed_everything,
    versions,
    write_json,
)
from ..analysis.monosemanticity import unit_rows
from ..store import Store
from ._common import load_pixels

FORMAT_VERSION = 1
KIND = "embedding-decoder"


class EmbeddingDecoder(nn.Module):
    """(B, dim) embeddings -> (B, 3, size, size) pixels in [0, 1]."""

    def __init__(self, dim: int, size: int = 32, width: int = 128):
        super().__init__()
        ups = int(math.log2(size / 4)) if size >= 8 else 0
        if size < 8 or 4 * 2**ups != size or width % 2**ups:
            raise MonoscopeError(
                f"decoder size must be a power of two >= 8 (got {size}) and width a multiple "
                f"of {2**ups} (got {width})"
            )
        self.dim, self.size, self.width = dim, size, width
        self.config: dict[str, Any] = {}  # filled by load_decoder
        self.fc = nn.Sequential(nn.Linear(dim, width * 16), nn.ReLU())
        layers: list[nn.Module] = []
        c = width
        for _ in range(ups):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        layers += [nn.Conv2d(c, 3, 3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(e).view(-1, self.width, 4, 4))


def edge_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontal and vertical image gradients."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def train_decoder(
    store: str | Path | Store,
    out: str | Path,
    *,
    size: int = 32,
    width: int = 128,
    epochs: int = 15,
    batch_size: int = 128,
    lr: float = 2e-3,
    noise: float = 0.05,
    edge_weight: float = 0.5,
    max_images: int = 20000,
    val_fraction: float = 0.05,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Train a decoder from the store's image embeddings to its images; returns ``out``.

    ``noise`` is the std of the Gaussian added to each input embedding, relative to its RMS
    coordinate; ``val_fraction`` of the images are held out to report the validation MSE.
    """
    device = resolve_device(device)
    seed_everything(seed)
    store = store if isinstance(store, Store) else Store(store)
    if store.count < 2:
        raise MonoscopeError(f"{store.path}: too few pairs to train a decoder")
    if epochs < 1 or batch_size < 2:
        raise MonoscopeError("need --epochs >= 1 and --batch-size >= 2")
    model = EmbeddingDecoder(store.dim, size, width).to(device)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(store.count)[:max_images])
    pixels = torch.from_numpy(load_pixels(store.pairs(), rows, size)).permute(0, 3, 1, 2)
    pixels = pixels.float().div_(255).to(device)
    emb = torch.from_numpy(store.rows("image", rows)).to(device)
    n_val = int(round(len(rows) * val_fraction)) if len(rows) >= 20 else 0
    order = torch.from_numpy(rng.permutation(len(rows)))
    val, train = order[:n_val], order[n_val:]
    steps_per_epoch = math.ceil(len(train) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    rms = emb.pow(2).mean(1, keepdim=True).sqrt()
    normalized = bool(store.manifest.get("normalized"))
    log: list[dict[str, float]] = []
    bar = tqdm(total=epochs * steps_per_epoch, desc="decoder", unit="step", disable=not progress)
    for epoch in range(epochs):
        model.train()
        perm = train[torch.randperm(len(train), generator=gen)]
        total = {"loss": 0.0, "mse": 0.0}
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size].to(device)
            e = emb[idx] + noise * rms[idx] * torch.randn(len(idx), store.dim, generator=gen).to(
                device
            )
            pred = model(unit_rows(e) if normalized else e)
            mse = F.mse_loss(pred, pixels[idx])
            loss = mse + edge_weight * edge_l1(pred, pixels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total["loss"] += float(loss.detach()) * len(idx)
            total["mse"] += float(mse.detach()) * len(idx)
            bar.update(1)
        entry = {"epoch": epoch + 1, **{k: v / len(train) for k, v in total.items()}}
        if n_val:
            entry["val_mse"] = float(F.mse_loss(decode(model, emb[val.to(device)]), pixels[val]))
        bar.set_postfix(mse=f"{entry['mse']:.4f}")
        log.append(entry)
    bar.close()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda p: save_file(tensors, str(p)))
    write_json(
        out / "config.json",
        {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "dim": store.dim,
            "size": size,
            "width": width,
            "normalized": normalized,
            "model": store.manifest.get("model"),
            "store": str(store.path.resolve()),
            "n_images": len(rows),
            "n_val": n_val,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "noise": noise,
            "edge_weight": edge_weight,
            "seed": seed,
            "final": log[-1],
            "log": log,
            "versions": versions(),
        },
    )
    return out


def load_decoder(path: str | Path, device: str = "cpu") -> EmbeddingDecoder:
    """Load a decoder saved by :func:`train_decoder`; its config is on ``.config``."""
    path = Path(path)
    config = read_json(path / "config.json")
    if config.get("kind") != KIND:
        raise MonoscopeError(f"{path}: not an embedding decoder (kind {config.get('kind')!r})")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise MonoscopeError(f"{path}: decoder format is newer than this monoscope understands")
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise MonoscopeError(f"{path}: model.safetensors is missing")
    model = EmbeddingDecoder(config["dim"], config["size"], config["width"])
    model.load_state_dict(load_file(str(weights)))
    model.config = config
    return model.to(device).eval()


def decode(model: EmbeddingDecoder, emb: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(B, 3, size, size) pixels of embeddings, in eval mode and without gradients."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = torch.cat([model(emb[i : i + batch_size]) for i in range(0, len(emb), batch_size)])
    model.train(was_training)
    return out
