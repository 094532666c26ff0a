from pathlib import Path

import pytest
import torch

from monoscope.featuremaps import load_featuremap
from monoscope.featuremaps.identity import IdentityMap


def test_sign_split_by_hand_and_lossless():
    g = IdentityMap(3)
    x = torch.tensor([[1.0, -2.0, 0.0]])
    assert g.encode(x).tolist() == [[1.0, 0.0, 0.0, 0.0, 2.0, 0.0]]
    assert torch.equal(g.decode(g.encode(x)), x)
    assert g.n_features == 6


def test_abs_mode_has_no_decoder():
    g = IdentityMap(2, mode="abs")
    assert g.encode(torch.tensor([[-1.5, 2.0]])).tolist() == [[1.5, 2.0]]
    with pytest.raises(NotImplementedError):
        g.decode(torch.zeros(1, 2))


def test_save_load_roundtrip(tmp_path: Path):
    IdentityMap(4, mode="abs").save(tmp_path / "f")
    g = load_featuremap(tmp_path / "f")
    assert isinstance(g, IdentityMap) and g.mode == "abs" and g.dim == 4
