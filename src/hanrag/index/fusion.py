"""Fusion of per-signal scores into one ranking (shared by every index adapter).

``weighted``: min-max normalise each signal over the candidate set, then a
weighted sum (the earlier in-house service's method). ``rrf``: reciprocal-rank
fusion, sum of ``w / (rrf_k + rank)``; insensitive to score scales.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def minmax(scores: FloatArray) -> FloatArray:
    lo = float(scores.min()) if scores.size else 0.0
    hi = float(scores.max()) if scores.size else 0.0
    if hi - lo <= 1e-12:
        # One value everywhere: the signal cannot tell candidates apart.
        return np.where(scores > 0, 1.0, 0.0) if hi > 0 else np.zeros_like(scores)
    return (scores - lo) / (hi - lo)


def fuse(
    signal_scores: dict[str, FloatArray],
    weights: dict[str, float],
    method: str,
    rrf_k: int = 60,
) -> FloatArray:
    """Fused score per candidate; every array is aligned on the same candidates."""
    size = next(iter(signal_scores.values())).shape[0] if signal_scores else 0
    fused = np.zeros(size, dtype=np.float64)
    for name, scores in signal_scores.items():
        weight = weights.get(name, 0.0)
        if weight <= 0:
            continue
        if method == "rrf":
            # Competition ranking: equal scores share a rank (1 + how many score higher), so
            # the result never depends on the order candidates happen to be listed in.
            ascending = np.sort(scores)
            higher = size - np.searchsorted(ascending, scores, side="right")
            fused += weight / (rrf_k + 1 + higher.astype(np.float64))
        else:
            fused += weight * minmax(scores)
    return fused


def top_k_indices(scores: FloatArray, k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` largest scores, best first (argpartition, no full sort)."""
    if scores.size == 0 or k <= 0:
        return np.zeros(0, dtype=np.intp)
    k = min(k, scores.size)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]
