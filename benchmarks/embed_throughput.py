"""Extraction throughput: ``monoscope.embed.embed`` vs a bare loop over the same HF model.

The model is a full-size, randomly initialised ViT-B/32 ``CLIPModel`` (``CLIPConfig``
defaults) with a CLIP BPE tokenizer whose merges make most caption words one token, as the
real vocabulary does for common words. The data is a JSONL file of 256x256 JPEGs with 6-10 word
captions. The bare loop calls ``get_image_features`` / ``get_text_features`` on pre-decoded,
pre-processed pixel tensors and pre-tokenised captions; ``embed`` does everything from the
files (decode, preprocess, tokenise, forward, write the store) with ``--workers`` 0 and 2.
Runs are interleaved (the order rotates) and repeated; the median images/s of each is reported
with its ratio to the bare loop (overhead = 1 - ratio), and so is the median CPU time of each
run (this process plus the decoding workers) as a ratio to the bare loop's: on a shared machine
wall-clock rates swing with the other jobs, while the CPU time a run needs mostly does not.

    python benchmarks/embed_throughput.py --pairs 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from monoscope.embed import embed
from monoscope.encoders import load_encoder
from monoscope.encoders.hf import projected

# fmt: off
WORDS = [
    "a", "photo", "of", "the", "dog", "cat", "red", "blue", "small", "large", "woman", "man",
    "sitting", "on", "grass", "near", "tree", "car", "street", "with", "two", "people", "in",
    "front", "building", "at", "night", "beach",
]
# fmt: on


def make_model(
    path: Path, vision: dict | None = None, text: dict | None = None, projection_dim: int = 512
) -> Path:
    """Save a random CLIP (default: ViT-B/32; ``vision``/``text`` override the tower configs)
    with a tokenizer that merges most WORDS into one token."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab |= {c + "</w>": i + len(alphabet) for i, c in enumerate(alphabet)}
    merges = []
    for word in sorted(set(WORDS)):
        if len(word) == 1:
            continue
        left = word[0]
        for j, ch in enumerate(word[1:], 1):
            right = ch + ("</w>" if j == len(word) - 1 else "")
            merges.append((left, right))
            left += right
            vocab.setdefault(left, len(vocab))
    for tok in ("<|startoftext|>", "<|endoftext|>"):
        vocab[tok] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    config = CLIPConfig(
        text_config={**(text or {}), **ids, "pad_token_id": tok.pad_token_id},
        vision_config=vision or {},
        projection_dim=projection_dim,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    side = config.vision_config.image_size
    processor = CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    )
    CLIPProcessor(processor, tok).save_pretrained(path)
    return path


def make_pairs(folder: Path, n: int) -> Path:
    """``n`` smooth random 256x256 JPEGs (photo-like sizes) and a JSONL of captions."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    lines = []
    for i in range(n):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        im = Image.fromarray(coarse).resize((256, 256), Image.BICUBIC)
        im.save(folder / "img" / f"{i}.jpg", quality=90)
        caption = " ".join(rng.choice(WORDS, rng.integers(6, 11)))
        lines.append(json.dumps({"image": f"img/{i}.jpg", "caption": caption}))
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "pairs.jsonl"


def bare(model: CLIPModel, pixels: list, tokens: list) -> float:
    """Images/s of the model alone on pre-processed batches."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for px, tk in zip(pixels, tokens, strict=True):
            projected(model.get_image_features(pixel_values=px))
            projected(model.get_text_features(**tk))
    return sum(len(p) for p in pixels) / (time.perf_counter() - t0)


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """fp32 matmul rate now: how much of the (shared) CPU this run is getting."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="monoscope-bench-"))
    model_dir = make_model(tmp / "model")
    data = make_pairs(tmp / "data", args.pairs)
    encoder = load_encoder(str(model_dir), device="cpu")
    model = encoder.model
    proc = CLIPProcessor.from_pretrained(model_dir)
    records = [json.loads(line) for line in data.read_text().splitlines()]
    images = [Image.open(data.parent / r["image"]).convert("RGB") for r in records]
    bs = args.batch_size
    pixels, tokens = [], []
    for lo in range(0, len(records), bs):
        pixels.append(proc(images=images[lo : lo + bs], return_tensors="pt")["pixel_values"])
        texts = [r["caption"] for r in records[lo : lo + bs]]
        tokens.append(dict(proc(text=texts, padding=True, truncation=True, return_tensors="pt")))
    print(
        f"ViT-B/32 CLIPModel (random), {args.pairs} pairs, batch {bs}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs; "
        f"mean caption length {np.mean([t['input_ids'].shape[1] for t in tokens]):.1f} tokens"
    )
    bare(model, pixels[:1], tokens[:1])  # warm-up
    gflops = [matmul_gflops()]

    def run_embed(workers: int) -> None:
        embed(
            encoder,
            str(data),
            tmp / "store",
            batch_size=bs,
            workers=workers,
            device="cpu",
            overwrite=True,
            progress=False,
        )

    runs = {
        "bare loop": lambda: bare(model, pixels, tokens),
        "embed workers=0": lambda: run_embed(0),
        "embed workers=2": lambda: run_embed(2),
    }
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.repeats):
        for name in names[r % 3 :] + names[: r % 3]:  # rotate the order
            c0, t0 = cpu_seconds(), time.perf_counter()
            runs[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(cpu_seconds() - c0)
        print(f"  repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in wall.items()))
    shutil.rmtree(tmp)
    gflops.append(matmul_gflops())
    print(f"fp32 matmul before/after: {gflops[0]:.0f} / {gflops[1]:.0f} GFLOP/s")
    base_wall = statistics.median(wall["bare loop"])
    base_cpu = statistics.median(cpu["bare loop"])
    print(f"{'':<18}{'images/s':>10}{'ratio':>8}{'overhead':>10}{'CPU s':>8}{'CPU ratio':>11}")
    for name in runs:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"{name:<18}{args.pairs / w:>10.1f}{base_wall / w:>8.3f}{1 - base_wall / w:>10.1%}"
            f"{c:>8.1f}{c / base_cpu:>11.3f}"
        )


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the decoding workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
