"""The bundled emoji dataset: counts, labels, images."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from monoscope.data import BadRecord, Pair, load_image_ref, open_source
from monoscope.data.emoji import EmojiPairs, emoji_array, load_emoji_image

TONES = {"none", "light", "medium-light", "medium", "medium-dark", "dark"}


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    return list(EmojiPairs())


@pytest.fixture(scope="module")
def by_caption(pairs: list[Pair]) -> dict[str, Pair]:
    return {p.caption: p for p in pairs}


def test_counts_and_order(pairs: list[Pair]) -> None:
    assert len(EmojiPairs()) == len(pairs) == 3773
    assert len({p.id for p in pairs}) == 3773
    assert len({p.caption for p in pairs}) == 3773
    assert pairs[0].id == "1f600" and pairs[0].caption == "grinning face"
    assert pairs[0].image_ref == "emoji:1f600"
    assert EmojiPairs().describe()["count"] == 3773


def test_label_counts(pairs: list[Pair]) -> None:
    tones = Counter(p.labels["skin_tone"] for p in pairs)
    assert tones == {
        "none": 1898,
        "light": 323,
        "medium-light": 323,
        "medium": 323,
        "medium-dark": 323,
        "dark": 323,
        "mixed": 260,
    }
    genders = Counter(p.labels["gender"] for p in pairs)
    assert genders == {"neutral": 2483, "woman": 602, "man": 593, "mixed": 95}
    groups = Counter(p.labels["group"] for p in pairs)
    assert len(groups) == 9 and groups["People & Body"] == 2260 and groups["Flags"] == 269
    assert "Component" not in groups


def test_known_triples(by_caption: dict[str, Pair]) -> None:
    woman = by_caption["woman firefighter: dark skin tone"]
    assert woman.id == "1f469-1f3ff-200d-1f692"
    assert woman.labels == {
        "gender": "woman",
        "skin_tone": "dark",
        "group": "People & Body",
        "subgroup": "person-role",
        "base": "firefighter",
    }
    man = by_caption["man firefighter: light skin tone"]
    assert (man.labels["gender"], man.labels["skin_tone"]) == ("man", "light")
    assert man.labels["base"] == woman.labels["base"] == by_caption["firefighter"].labels["base"]
    assert by_caption["firefighter"].labels["gender"] == "neutral"
    assert by_caption["person"].labels["gender"] == "neutral"
    assert by_caption["mermaid"].labels["gender"] == "woman"  # female sign, no gender word
    assert by_caption["flag: Isle of Man"].labels["gender"] == "neutral"
    assert by_caption["kiss: woman, man"].labels["gender"] == "mixed"
    family = by_caption["family: man, woman, boy"].labels
    assert family["base"] == "family: adult, adult, child"
    mixed = by_caption["people holding hands: light skin tone, dark skin tone"].labels
    assert mixed["skin_tone"] == "mixed"
    assert by_caption["grinning face"].labels["subgroup"] == "face-smiling"


def test_role_pairs_in_six_tones(pairs: list[Pair]) -> None:
    """86 bases have woman and man variants in all six tones (none + five modifiers): the 78
    woman/man/gender-sign role pairs, five gendered characters with a neutral counterpart and
    three same-gender couples (kiss: woman, woman ...)."""
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for p in pairs:
        seen[p.labels["base"]].add((p.labels["gender"], p.labels["skin_tone"]))
    full = {b for b, s in seen.items() if all((g, t) in s for g in ("woman", "man") for t in TONES)}
    characters = {"child", "older person", "person with crown", "Mx Claus", "pregnant person"}
    couples = {"kiss", "couple with heart", "people holding hands"}
    assert characters | couples <= full
    assert len(full) == 86
    roles = full - characters - couples
    assert len(roles) == 78
    assert {"firefighter", "person", "police officer", "person: beard", "merperson"} <= roles
    # Each role has exactly one woman and one man variant per tone.
    for base in roles:
        counts = Counter(
            (p.labels["gender"], p.labels["skin_tone"])
            for p in pairs
            if p.labels["base"] == base and p.labels["gender"] in ("woman", "man")
        )
        assert set(counts.values()) == {1} and len(counts) == 12, base
    assert all((("neutral", t) in seen["firefighter"]) for t in TONES)


def test_images(pairs: list[Pair]) -> None:
    images, records = emoji_array()
    assert images.shape == (3773, 64, 64, 3) and images.dtype == np.uint8
    assert not images.flags.writeable
    assert [r["id"] for r in records] == [p.id for p in pairs]
    assert emoji_array()[0] is images  # cached
    im = pairs[0].load_image()
    assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(im), images[0])
    assert tuple(images[0, 0, 0]) == (255, 255, 255)  # white background
    # 18 pairs share a render with another pair (e.g. some flags): 3,755 distinct images.
    assert len({im.tobytes() for im in images}) == 3755


def test_skin_tone_is_visible(by_caption: dict[str, Pair]) -> None:
    """The darkest and lightest variant differ in mean brightness of the non-white pixels."""

    def ink_mean(caption: str) -> float:
        a = np.asarray(by_caption[caption].load_image(), np.float32)
        ink = a[(a < 250).any(-1)]
        return float(ink.mean())

    light = ink_mean("woman firefighter: light skin tone")
    dark = ink_mean("woman firefighter: dark skin tone")
    assert light > dark + 5


def test_lookup() -> None:
    assert load_image_ref("emoji:1f600").size == (64, 64)
    with pytest.raises(BadRecord, match="unknown emoji"):
        load_emoji_image("nope")
    assert isinstance(open_source("emoji"), EmojiPairs)
