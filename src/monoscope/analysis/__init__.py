"""Modality analysis: streaming per-feature statistics, MDS, groups, top-m samples."""
