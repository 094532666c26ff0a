"""The pocket model's in-batch retrieval on emoji and on data unlike emoji.

Prints the image→text recall@1 that ``monoscope embed`` records after embedding (see
``monoscope.retrieval_check``) for the bundled emoji (all pairs, and the held-out skin-tone
variants), and for three generated data sets: coloured shapes captioned by colour, shape, size
and position; words rendered as images, captioned by the word; and noise images with random
two-word captions. These numbers justify the warning threshold ``POCKET_MIN_R1``.

    .venv/bin/python scripts/pocket_retrieval_check.py [--emoji-store runs/demo/store]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from monoscope.embed import embed
from monoscope.encoders.pocket_train import heldout_mask
from monoscope.retrieval_check import retrieval_check
from monoscope.store import Store

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
    "black": (10, 10, 10),
    "pink": (250, 130, 190),
}
WORDS = [
    "apple",
    "river",
    "mountain",
    "window",
    "garden",
    "castle",
    "silver",
    "engine",
    "forest",
    "planet",
    "candle",
    "bridge",
    "winter",
    "doctor",
    "pencil",
    "rocket",
    "island",
    "monkey",
    "guitar",
    "basket",
    "camera",
    "dragon",
    "ladder",
    "mirror",
    "museum",
    "needle",
    "orange",
    "parrot",
    "pillow",
    "rabbit",
    "saddle",
    "shadow",
    "spider",
    "statue",
    "tunnel",
    "velvet",
    "wallet",
    "zipper",
    "anchor",
    "barrel",
    "cactus",
    "dinner",
    "eagle",
    "feather",
    "glacier",
    "hammer",
    "jacket",
    "kettle",
    "lemon",
    "magnet",
    "noodle",
    "oyster",
    "pepper",
    "quartz",
    "ribbon",
    "sailor",
    "teapot",
    "umbrella",
    "violin",
    "walnut",
    "yogurt",
    "badger",
    "cookie",
    "desert",
    "falcon",
    "goblet",
    "harbor",
    "igloo",
    "jungle",
    "kitten",
    "lantern",
    "meadow",
]


def shapes(root: Path) -> list[dict]:
    records = []
    for i, (shape, colour, size, (where, (cx, cy))) in enumerate(
        itertools.product(
            ("circle", "square", "triangle", "diamond", "cross"),
            COLOURS,
            ("small", "large"),
            {
                "top left": (16, 16),
                "top right": (48, 16),
                "bottom left": (16, 48),
                "bottom right": (48, 48),
                "centre": (32, 32),
            }.items(),
        )
    ):
        im = Image.new("RGB", (64, 64), "white")
        d, r = ImageDraw.Draw(im), 6 if size == "small" else 14
        box, fill = (cx - r, cy - r, cx + r, cy + r), COLOURS[colour]
        if shape == "circle":
            d.ellipse(box, fill=fill)
        elif shape == "square":
            d.rectangle(box, fill=fill)
        elif shape == "triangle":
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        elif shape == "diamond":
            d.polygon([(cx, cy - r), (cx - r, cy), (cx, cy + r), (cx + r, cy)], fill=fill)
        else:
            d.rectangle((cx - r, cy - r // 3, cx + r, cy + r // 3), fill=fill)
            d.rectangle((cx - r // 3, cy - r, cx + r // 3, cy + r), fill=fill)
        im.save(root / f"s{i}.png")
        records.append(
            {"image": f"s{i}.png", "caption": f"a {size} {colour} {shape} in the {where}"}
        )
    return records


def words(root: Path) -> list[dict]:
    font = ImageFont.load_default(size=14)
    records = []
    for i, word in enumerate(WORDS):
        im = Image.new("RGB", (96, 32), "white")
        ImageDraw.Draw(im).text((4, 8), word, fill="black", font=font)
        im.save(root / f"w{i}.png")
        records.append({"image": f"w{i}.png", "caption": word})
    return records


def noise(root: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(256):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / f"n{i}.png")
        a, b = rng.choice(WORDS, 2, replace=False)
        records.append({"image": f"n{i}.png", "caption": f"a photo of {a} and {b}"})
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emoji-store", type=Path, help="a pocket store of the emoji (else embedded)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        emoji = a.emoji_store or embed(
            "pocket", "emoji", root / "emoji", device="cpu", progress=False
        )
        store = Store(emoji)
        rows = {"emoji": retrieval_check(store)}
        held = np.flatnonzero(heldout_mask(store.pairs()))
        rows["emoji, held-out variants"] = retrieval_check(store, among=held)
        for name, make in (("shapes", shapes), ("rendered words", words), ("noise", noise)):
            data = root / name.replace(" ", "-")
            data.mkdir()
            lines = "".join(json.dumps(r) + "\n" for r in make(data))
            (data / "pairs.jsonl").write_text(lines)
            out = embed(
                "pocket",
                str(data / "pairs.jsonl"),
                root / f"{data.name}-store",
                device="cpu",
                progress=False,
            )
            rows[name] = retrieval_check(Store(out))
    print("| data | pairs sampled | chance | image→text R@1 | text→image R@1 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(
            f"| {name} | {r['n_pairs']} | {r['chance']:.3f} | {r['i2t@1']:.3f} | {r['t2i@1']:.3f} |"
        )


if __name__ == "__main__":
    main()
