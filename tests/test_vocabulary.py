import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monoscope._util import MonoscopeError
from monoscope.analysis.analyze import analyze, read_feature_table
from monoscope.analysis.vocabulary import (
    caption_vocabulary,
    nearest_terms,
    read_vocabulary,
    vocabulary_names,
)
from monoscope.featuremaps.center import CenteredMap, modality_means
from monoscope.featuremaps.sae import TopKSAE
from monoscope.store import Store


def test_caption_vocabulary_words_and_phrases():
    caps = [
        "woman firefighter: dark skin tone",
        "man firefighter: dark skin tone",
        "a red apple",
        "red apple of the day",
    ]
    vocab = caption_vocabulary(caps)
    assert vocab[:3] == ["apple", "dark", "dark skin"]  # all df 2: ties alphabetical
    for term in ("firefighter", "dark skin tone", "skin tone", "red apple", "apple"):
        assert term in vocab
    assert "woman firefighter" not in vocab  # in one caption only
    assert "tone man" not in vocab  # phrases never cross a clause boundary
    assert not any(t.split()[0] in ("a", "of", "the") for t in vocab)
    assert caption_vocabulary(["one caption"], min_count=2) == ["caption", "one", "one caption"]


def test_read_vocabulary(tmp_path: Path):
    f = tmp_path / "terms.txt"
    f.write_text("# colours\nred\n\n  blue \nred\n")
    assert read_vocabulary(f) == ["red", "blue"]
    f.write_text("# nothing\n\n")
    with pytest.raises(MonoscopeError, match="no terms"):
        read_vocabulary(f)
    with pytest.raises(MonoscopeError, match="not found"):
        read_vocabulary(tmp_path / "missing.txt")


def test_nearest_terms_is_a_cosine_top_k():
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((7, 5))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    terms = rng.standard_normal((11, 5)) * rng.uniform(0.5, 3, (11, 1))
    idx, cos = nearest_terms(dirs, terms, top=3, chunk=2)
    ref = dirs @ (terms / np.linalg.norm(terms, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(idx, np.argsort(-ref, axis=1)[:, :3])
    np.testing.assert_allclose(cos, np.sort(ref, axis=1)[:, ::-1][:, :3])


class CountingEncoder:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def info(self):
        return self.inner.info()

    def encode_texts(self, texts):
        self.calls += len(texts)
        return self.inner.encode_texts(texts)


TERMS = ["firefighter", "red apple", "dark skin tone", "blue", "cat", "tree"]


def _sae_pointing_at(toy_encoder, terms: list[str]) -> TopKSAE:
    """A 4-feature SAE whose decoder rows are the (normalised) embeddings of ``terms``; a large
    encoder bias keeps every feature alive."""
    sae = TopKSAE(8, latents=len(terms), k=len(terms))
    e = toy_encoder.encode_texts(terms)
    with torch.no_grad():
        sae.W_dec.copy_(e / e.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.fill_(10.0)
    return sae


def test_every_feature_named_from_the_vocabulary_and_cached(small_store, toy_encoder, tmp_path):
    store = Store(small_store)
    sae = _sae_pointing_at(toy_encoder, ["cat", "blue", "firefighter", "tree"])
    analysis = analyze(store, sae, tmp_path / "a", null_sets=10, progress=False)
    (tmp_path / "terms.txt").write_text("\n".join(TERMS))
    enc = CountingEncoder(toy_encoder)
    names = vocabulary_names(store, sae, analysis, enc, tmp_path / "terms.txt")
    table = read_feature_table(analysis / "features.csv")
    assert list(table["vocab_name"]) == ["cat", "blue", "firefighter", "tree"]
    np.testing.assert_allclose(table["vocab_cos"], 1.0, atol=1e-5)
    assert "name" in table and "mds" in table  # the other columns are kept
    top = json.loads(names.read_text())["features"]["0"]
    assert top[0][0] == "cat" and len(top) == 5 and top[0][1] >= top[1][1]
    summary = json.loads((analysis / "summary.json").read_text())
    assert (
        summary["vocabulary"]["n_terms"] == 6 and summary["vocabulary"]["directions"] == "decoder"
    )
    assert enc.calls == 6
    vocabulary_names(store, sae, analysis, enc, tmp_path / "terms.txt")
    assert enc.calls == 6  # embedded once, then read from <analysis>/vocabulary/
    # default: the captions' words ("caption", "0", ..., "caption 12", ...)
    vocabulary_names(store, sae, analysis, enc)
    assert json.loads(names.read_text())["source"] == "captions"
    assert enc.calls > 6


def test_centred_maps_name_in_the_centred_space(small_store, toy_encoder, tmp_path):
    store = Store(small_store)
    mi, mt = modality_means(store)
    e = toy_encoder.encode_texts(TERMS)
    e = e / e.norm(dim=1, keepdim=True)  # the toy store is normalised: so is the vocabulary
    centred_terms = e - torch.from_numpy(mt).float()
    sae = TopKSAE(8, latents=2, k=2)
    with torch.no_grad():
        sae.W_dec.copy_(centred_terms[[2, 4]] / centred_terms[[2, 4]].norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.fill_(10.0)
    fmap = CenteredMap.wrap(sae, mi, mt)
    analysis = analyze(store, fmap, tmp_path / "a", null_sets=10, progress=False)
    (tmp_path / "terms.txt").write_text("\n".join(TERMS))
    vocabulary_names(store, fmap, analysis, toy_encoder, tmp_path / "terms.txt")
    table = read_feature_table(analysis / "features.csv")
    assert list(table["vocab_name"]) == ["dark skin tone", "cat"]


def test_cli_vocab_needs_a_reloadable_encoder(small_store, tmp_path, capsys):
    from monoscope.cli import main

    fm = tmp_path / "fm"
    assert (
        main(["train", "--store", str(small_store), "--method", "identity", "--out", str(fm)]) == 0
    )
    argv = ["analyze", "--store", str(small_store), "--featuremap", str(fm), "--out"]
    assert main([*argv, str(tmp_path / "a"), "--vocab", "--quiet"]) == 2
    assert "cannot reload an encoder of kind 'toy'" in capsys.readouterr().err
