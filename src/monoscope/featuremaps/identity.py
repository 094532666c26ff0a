"""The raw-dimension baseline: non-negative codes from raw embedding coordinates."""

from __future__ import annotations

import torch

from .base import FeatureMap, register


@register
class IdentityMap(FeatureMap):
    """Raw dimensions made non-negative.

    ``mode="sign-split"`` (default): g(x) = [relu(x), relu(-x)], K = 2d, feature k < d is the
    positive side of dimension k and feature d + k its negative side; lossless, so
    ``decode(encode(x)) == x``. ``mode="abs"``: g(x) = |x|, K = d (no decoder).
    """

    kind = "identity"

    def __init__(self, dim: int, mode: str = "sign-split"):
        super().__init__(dim)
        if mode not in ("sign-split", "abs"):
            raise ValueError(f"identity mode must be 'sign-split' or 'abs', not {mode!r}")
        self.mode = mode

    @property
    def has_decoder(self) -> bool:  # type: ignore[override]
        return self.mode == "sign-split"

    @property
    def n_features(self) -> int:
        return 2 * self.dim if self.mode == "sign-split" else self.dim

    def encode(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        if self.mode == "abs":
            return x.abs()
        return torch.cat([torch.relu(x), torch.relu(-x)], dim=-1)

    def decode(self, z: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        if self.mode == "abs":
            raise NotImplementedError("identity mode 'abs' has no decoder")
        return z[..., : self.dim] - z[..., self.dim :]

    def decoder_directions(self) -> torch.Tensor | None:
        if self.mode == "abs":
            return None
        eye = torch.eye(self.dim)
        return torch.cat([eye, -eye])
