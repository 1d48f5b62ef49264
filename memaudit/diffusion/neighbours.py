"""Exact two nearest training images of every generated image, by batched GEMM.

``||x - y||^2 = |x|^2 + |y|^2 - 2 x.y``: one float32 matrix product per chunk of queries
finds a few candidates per query, whose distances are then recomputed directly in float64,
so rounding in the expansion can reorder near-ties only among candidates, never drop the
true two nearest. Chunks bound memory to ``memory_mb`` for the (chunk, N) distance block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CANDIDATES = 8


@dataclass(frozen=True)
class Neighbours:
    """Per query: the nearest and second-nearest training rows and their distances (0..255 scale
    / sqrt(dims)).
    """

    index1: np.ndarray
    index2: np.ndarray
    d1: np.ndarray
    d2: np.ndarray

    def ratio(self) -> np.ndarray:
        """d1 / d2, and 1 when both are 0.

        d2 = 0 needs two identical training images, so it happens only when the search keeps
        duplicates (``duplicates="keep"``, as DiffMemorize's ``mem_ratio.py``). There a near copy
        of a duplicated image has d1 = d2, ratio 1, and an exact copy 0/0, which DiffMemorize
        leaves NaN (``NaN < 1/3`` is false: not memorized); 1 gives the same verdict and is the
        limit of the near copies.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            r = self.d1 / self.d2
        return np.where(self.d2 > 0, r, 1.0)


def two_nearest(queries: np.ndarray, train: np.ndarray, *, memory_mb: float = 256.0) -> Neighbours:
    """Nearest and second-nearest rows of ``train`` for each row of ``queries`` (any shape after the
    first axis).

    Examples
    --------
    >>> train = np.array([[0, 0], [10, 0], [0, 30]], dtype=np.uint8)
    >>> nn = two_nearest(np.array([[1, 0]], dtype=np.uint8), train)
    >>> nn.index1.tolist(), nn.index2.tolist(), np.round(nn.d1 * np.sqrt(2), 6).tolist()
    ([0], [1], [1.0])
    """
    q = torch.as_tensor(queries.reshape(len(queries), -1), dtype=torch.float32)
    t = torch.as_tensor(train.reshape(len(train), -1), dtype=torch.float32)
    if len(t) < 2:
        raise ValueError("two_nearest needs at least two training images")
    if q.shape[1] != t.shape[1]:
        raise ValueError(
            f"queries have {q.shape[1]} values per image, training images {t.shape[1]}"
        )
    k = min(CANDIDATES, len(t))
    t_sq = (t * t).sum(1)  # (N,)
    t64 = t.double()
    chunk = max(1, int(memory_mb * 2**20 / (4 * len(t))))
    out: list[list[np.ndarray]] = [[], [], [], []]
    for start in range(0, len(q), chunk):
        qc = q[start : start + chunk]  # (m, D)
        approx = (qc * qc).sum(1, keepdim=True) + t_sq[None] - 2 * qc @ t.T  # (m, N)
        cand = approx.topk(k, dim=1, largest=False).indices  # (m, k)
        exact = (t64[cand] - qc.double()[:, None]).pow(2).sum(-1)  # (m, k)
        order = exact.argsort(dim=1, stable=True)[:, :2]
        best = cand.gather(1, order)
        dist = exact.gather(1, order).sqrt()
        for acc, v in zip(out, (best[:, 0], best[:, 1], dist[:, 0], dist[:, 1])):
            acc.append(v.numpy())
    scale = np.sqrt(q.shape[1])
    i1, i2, d1, d2 = (np.concatenate(a) for a in out)
    return Neighbours(i1, i2, d1 / scale, d2 / scale)
