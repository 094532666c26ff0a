"""Equivalence with EleutherAI sparsify: a SparseCoder saved with its own ``save_to_disk`` is
imported and compared with its ``encode``/``decode``/forward."""

from __future__ import annotations

import pytest
import torch

from interop_helpers import close, imported, inputs, randomise, require

sparsify = require("sparsify")

D, K = 16, 64


def test_import_matches_sparsify(tmp_path):
    coder = randomise(sparsify.SparseCoder(D, sparsify.SparseCoderConfig(num_latents=K, k=8)))
    coder.save_to_disk(tmp_path / "run" / "layers.0")
    ref = sparsify.SparseCoder.load_from_disk(tmp_path / "run" / "layers.0")
    fm = imported("sparsify", tmp_path / "run", tmp_path)
    assert fm.kind == "sae-topk" and fm.k == 8
    x = inputs(D)
    with torch.no_grad():
        enc = ref.encode(x)
        z_ref = torch.zeros(len(x), K).scatter_(1, enc.top_indices, enc.top_acts)
        z = fm.encode(x)
        assert int((z_ref > 0).sum()) > 0
        assert close(z, z_ref)
        assert close(fm.decode(z), ref.decode(enc.top_acts, enc.top_indices))
        assert close(fm.decode(z), ref(x).sae_out)


def test_transcoder_is_refused(tmp_path):
    from monoscope._util import MonoscopeError
    from monoscope.interop import import_sae

    cfg = sparsify.SparseCoderConfig(num_latents=K, k=8, transcode=True)
    sparsify.SparseCoder(D, cfg).save_to_disk(tmp_path / "tc")
    with pytest.raises(MonoscopeError, match="transcoder"):
        import_sae("sparsify", tmp_path / "tc", tmp_path / "fm")
