"""TokenScores: the per-token record every attack reads. Nothing downstream calls a model again."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

FIELDS = ("logp", "mu", "sigma")


@dataclass(frozen=True)
class TextScores:
    """The scored tokens of one text (the first token has no context and is left out)."""

    token_ids: np.ndarray  # (n,) all tokens of the text
    logp: np.ndarray  # (n-1,) log p(token_t | tokens_<t)
    mu: np.ndarray  # (n-1,) E_v[log p(v)] under the next-token distribution
    sigma: np.ndarray  # (n-1,) std_v[log p(v)]
    is_argmax: np.ndarray  # (n-1,) the actual token was the most likely one

    @property
    def entropy(self) -> np.ndarray:
        """Entropy of the next-token distribution: -sum p log p, which is exactly -mu."""
        return -self.mu


@dataclass(frozen=True)
class TokenScores:
    """Ragged per-token arrays for a batch of texts.

    Flat arrays hold every token of every text back to back; ``offsets[i]:offsets[i+1]``
    is text ``i``. ``scored`` is False for the first token of each text, where ``logp``,
    ``mu`` and ``sigma`` are NaN.

    Examples
    --------
    >>> ts = TokenScores.from_texts([TextScores(np.array([5, 6, 7]), np.array([-1., -2.]),
    ...     np.zeros(2), np.ones(2), np.array([True, False]))])
    >>> len(ts), ts.n_scored.tolist(), ts.text(0).logp.tolist()
    (1, [2], [-1.0, -2.0])
    """

    offsets: np.ndarray  # (N+1,) int64
    token_ids: np.ndarray  # (T,) int32
    logp: np.ndarray  # (T,) float32
    mu: np.ndarray  # (T,) float32
    sigma: np.ndarray  # (T,) float32
    is_argmax: np.ndarray  # (T,) bool
    scored: np.ndarray  # (T,) bool

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_scored(self) -> np.ndarray:
        return np.maximum(self.n_tokens - 1, 0)

    def text(self, i: int) -> TextScores:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        s = slice(a + 1, b)
        return TextScores(
            self.token_ids[a:b], self.logp[s], self.mu[s], self.sigma[s], self.is_argmax[s]
        )

    def __iter__(self) -> Iterator[TextScores]:
        return (self.text(i) for i in range(len(self)))

    def subset(self, indices: Iterable[int]) -> TokenScores:
        return TokenScores.from_texts([self.text(int(i)) for i in indices])

    @classmethod
    def from_texts(cls, texts: list[TextScores]) -> TokenScores:
        lengths = np.array([len(t.token_ids) for t in texts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def flat(name: str, dtype: type, fill: float) -> np.ndarray:
            parts: list[np.ndarray] = []
            for t in texts:
                if len(t.token_ids):  # the unscored first token
                    parts.append(np.array([fill], dtype=dtype))
                parts.append(np.asarray(getattr(t, name), dtype=dtype))
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        scored = np.ones(int(offsets[-1]), dtype=bool)
        scored[offsets[:-1][lengths > 0]] = False
        return cls(
            offsets=offsets,
            token_ids=np.concatenate([np.asarray(t.token_ids, np.int32) for t in texts])
            if texts
            else np.zeros(0, np.int32),
            logp=flat("logp", np.float32, np.nan),
            mu=flat("mu", np.float32, np.nan),
            sigma=flat("sigma", np.float32, np.nan),
            is_argmax=flat("is_argmax", bool, False),
            scored=scored,
        )
