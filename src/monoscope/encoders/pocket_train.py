"""Train the pocket model on the bundled emoji pairs (``monoscope pocket train``).

Recipe (LiT-style): caption embeddings of the frozen MiniLM are computed once; the image CNN
and the text projection are trained with the symmetric InfoNCE loss and a learnable
temperature, AdamW and a cosine schedule with warm-up. Batches are built from whole families
of variants (same ``base`` label: woman/man/neutral x skin tones) so every batch holds the hard
negatives the model must tell apart. Augmentation keeps meaning: small random translation and
scale, slight brightness/contrast jitter and pixel noise; no flips, no hue changes (skin tone
and colour are part of the caption).

Held-out split: for every emoji that comes in the five skin tones, one tone variant (chosen by
a hash of the tone-free sequence) is left out of training and scored separately.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from .._util import atomic_write, resolve_device, seed_everything, versions, write_json
from .pocket import DEFAULT_CONFIG, OUT_NAMES, PocketEncoder, PocketModel, minilm_embed

TONES = ("light", "medium-light", "medium", "medium-dark", "dark")
MODIFIERS = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}


def is_heldout(pair: dict[str, Any]) -> bool:
    """Whether an emoji pair is in the held-out split.

    Every emoji that comes in the five skin tones keeps one tone variant out of training:
    ``TONES[sha256(id without tone modifiers) % 5]``, so each tone is held out for some emoji
    and seen for the others. Depends on the pair alone, so subsets split consistently.
    """
    tone = pair["labels"]["skin_tone"]
    if tone not in TONES:
        return False
    key = "-".join(c for c in pair["id"].split("-") if c not in MODIFIERS)
    return TONES[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(TONES)] == tone


def heldout_mask(pairs: Sequence[dict[str, Any]]) -> np.ndarray:
    """Boolean mask of :func:`is_heldout` over ``pairs``."""
    return np.array([is_heldout(p) for p in pairs], dtype=bool)


def family_batches(bases: Sequence[str], batch_size: int, rng: np.random.Generator) -> list:
    """Shuffled batches of row indices in which families (same base) stay together."""
    families: dict[str, list[int]] = defaultdict(list)
    for i, b in enumerate(bases):
        families[b].append(i)
    groups = list(families.values())
    order = np.concatenate([groups[g] for g in rng.permutation(len(groups))])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Meaning-preserving augmentation of (B, 3, H, W) pixels in [0, 1] on a white background."""
    b = x.shape[0]
    scale = 1 + (torch.rand(b, generator=gen) * 2 - 1) * 0.08
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * 0.08
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = nn.functional.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    # Warp the "ink" (1 - x) so the zero padding outside the image is white.
    x = 1 - nn.functional.grid_sample(1 - x, grid, padding_mode="zeros", align_corners=False)
    brightness = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.06
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.08
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.to(x.device) + mean + brightness.to(x.device)
    x = x + torch.randn(x.shape, generator=gen).to(x.device) * 0.015
    return x.clamp_(0, 1)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of aligned (image, text) embeddings."""
    img = nn.functional.normalize(img, dim=-1)
    txt = nn.functional.normalize(txt, dim=-1)
    logits = logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T
    target = torch.arange(len(img), device=img.device)
    return (
        nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)
    ) / 2


def recall_at(img: torch.Tensor, txt: torch.Tensor, rows: np.ndarray, ks=(1, 5)) -> dict:
    """Recall@k of the pairs in ``rows`` against the full gallery, both directions.

    A query counts as found at k when fewer than k gallery items score strictly higher than its
    own partner (identical renders tie and do not penalise each other).
    """
    img = nn.functional.normalize(img.float(), dim=-1)
    txt = nn.functional.normalize(txt.float(), dim=-1)
    idx = torch.as_tensor(rows, dtype=torch.long)
    out: dict[str, float] = {}
    for name, q, g in (("image_to_text", img, txt), ("text_to_image", txt, img)):
        scores = q[idx] @ g.T
        own = scores.gather(1, idx[:, None])
        rank = (scores > own).sum(1)
        for k in ks:
            out[f"{name}_r@{k}"] = round(float((rank < k).float().mean()), 4) if len(idx) else 0.0
    return out


def evaluate_retrieval(
    encoder: PocketEncoder,
    pairs: Sequence[dict[str, Any]] | None = None,
    images: np.ndarray | None = None,
) -> dict[str, Any]:
    """Image->text and text->image recall@1/@5 with every caption/image of ``pairs`` as gallery.

    ``pairs`` are emoji pair records (default: the whole bundled set); ``images`` their uint8
    (N, 64, 64, 3) array (default: looked up by id). Reported separately for the training
    pairs and the held-out pairs.
    """
    from ..data.emoji import emoji_array

    all_images, all_pairs = emoji_array()
    if pairs is None:
        pairs = all_pairs
    if images is None:
        row = {p["id"]: i for i, p in enumerate(all_pairs)}
        images = all_images[[row[p["id"]] for p in pairs]]
    img = embed_images(encoder, images)
    txt = encoder.encode_texts([p["caption"] for p in pairs])
    held = heldout_mask(pairs)
    return {
        "gallery": len(pairs),
        "train": {"count": int((~held).sum()), **recall_at(img, txt, np.flatnonzero(~held))},
        "heldout": {"count": int(held.sum()), **recall_at(img, txt, np.flatnonzero(held))},
    }


@torch.inference_mode()
def embed_images(encoder: PocketEncoder, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Embeddings of a uint8 (N, H, W, 3) array (the emoji set) without going through PIL."""
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[i : i + batch_size]))
        x = x.permute(0, 3, 1, 2).float().div_(255).to(encoder.device)
        out.append(encoder.encode_image_tensor(x).float().cpu())
    return torch.cat(out)


def train_pocket(
    out_dir: Path,
    epochs: int = 80,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 128,
    lr: float = 2e-3,
    holdout: bool = True,
    progress: bool = True,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train the pocket model on the bundled emoji pairs; save it into ``out_dir``.

    Writes ``model.safetensors``, ``config.json`` and ``metrics.json`` (atomically) and returns
    the metrics. ``holdout=False`` trains on every pair; ``limit`` keeps the first ``limit``
    pairs (for quick tests).
    """
    from tqdm.auto import tqdm

    from ..data.emoji import emoji_array

    t0 = time.perf_counter()
    device = resolve_device(device)
    seed_everything(seed)
    out_dir = Path(out_dir)
    images, pairs = emoji_array()
    if limit is not None:
        images, pairs = images[:limit], pairs[:limit]
    held = heldout_mask(pairs) if holdout else np.zeros(len(pairs), dtype=bool)
    train_rows = np.flatnonzero(~held)
    config = {**DEFAULT_CONFIG}

    text_base = minilm_embed([p["caption"] for p in pairs], max_tokens=config["max_tokens"])
    t_text = time.perf_counter() - t0
    pixels = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)  # a writable copy

    model = PocketModel(config).to(device)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing in stubs
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    bases = [pairs[i]["labels"]["base"] for i in train_rows]
    steps_per_epoch = len(family_batches(bases, batch_size, np.random.default_rng(0)))
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total // 10, 2 * steps_per_epoch)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    log: list[dict[str, float]] = []
    bar = tqdm(total=total, desc="pocket", unit="step", disable=not progress)
    t_train, cpu_train = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        model.train()
        losses = []
        for batch in family_batches(bases, batch_size, rng):
            rows = torch.as_tensor(train_rows[batch])
            x = augment(pixels[rows].float().div_(255), gen).to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            loss = clip_loss(
                model.image(x), model.text(text_base[rows].to(device)), model.logit_scale
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        log.append({"epoch": epoch + 1, "loss": float(np.mean(losses))})
    bar.close()
    seconds_train = time.perf_counter() - t_train
    cpu_seconds_train = time.process_time() - cpu_train

    # float16 on disk halves the package data; the model computes in float32 after loading.
    state = {
        k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    weights = out_dir / OUT_NAMES[0]
    atomic_write(weights, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    config["train"] = {
        "data": "emoji",
        "pairs": len(pairs),
        "train_pairs": len(train_rows),
        "heldout": bool(holdout),
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": 0.05,
        "schedule": "cosine, linear warm-up",
        "batches": "families (same base) kept together",
        "versions": versions(),
    }
    write_json(out_dir / OUT_NAMES[1], config)

    encoder = PocketEncoder.load(out_dir, device=device)
    metrics = {
        **evaluate_retrieval(encoder, pairs, images),
        "logit_scale": round(float(model.logit_scale.detach().exp()), 3),
        "seconds": {
            "text_embeddings": round(t_text, 1),
            "train": round(seconds_train, 1),
            "per_epoch": round(seconds_train / max(1, epochs), 2),
            # CPU time of all threads: wall time on an otherwise idle machine is about this
            # divided by the thread count (wall time above grows with other load).
            "train_cpu": round(cpu_seconds_train, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "loss": log,
    }
    write_json(out_dir / "metrics.json", metrics)
    return metrics
