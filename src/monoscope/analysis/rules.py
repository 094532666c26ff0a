"""One place that turns a feature's evidence into a verdict under any rule (docs/method.md)."""

from __future__ import annotations

import numpy as np

from ..config import RuleSettings
from .evidence import (
    Evidence,
    PairMoments,
    evidence,
    evidence_verdicts,
)
from .mds import Grouping, group_features
from .uncertainty import benjamini_hochberg, group_by_test


def apply_rule(
    settings: RuleSettings,
    moments: PairMoments,
    mds01: np.ndarray,
    p_values: np.ndarray | None = None,
) -> tuple[Grouping, np.ndarray | None, Evidence]:
    """The grouping under ``settings``, its q-values (evidence and test rules) and the evidence
    at the thresholds it used. ``mds01``: the MDS the point rules group, on the [0, 1] scale;
    ``p_values``: the sign-flip test's (rule test)."""
    s = settings
    q = None
    if s.rule == "evidence":
        ev = evidence(moments, s.low, s.high, prior=s.pseudo_firings)
        v = evidence_verdicts(ev, s.low, s.high, fdr=s.fdr, min_firings=s.min_firings)
        return Grouping(v.verdicts, "evidence", s.low, s.high), v.q_values, ev
    if s.rule == "test":
        if p_values is None:
            raise ValueError("the test rule needs the sign-flip p-values")
        q = benjamini_hochberg(np.where(np.isfinite(mds01), p_values, np.nan))
        grouping = group_by_test(mds01, q, s.fdr, s.min_effect)
    else:
        grouping = group_features(
            mds01, s.rule, low=s.low, high=s.high, quantile=s.quantile, warn=False
        )
    return grouping, q, evidence(moments, grouping.low, grouping.high, prior=s.pseudo_firings)
