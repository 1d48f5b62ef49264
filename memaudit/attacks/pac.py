"""PAC, polarized augment calibration (Ye et al. 2024): the polarized distance of a text's token
log-probabilities against that of word-swapped copies of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from memaudit.io.texts import text_hash
from memaudit.scoring.engine import score_texts
from memaudit.scoring.tokenscores import TokenScores

from .base import AttackInputs, register, register_view
from .views import ViewContext

SWAP_RATIO = 0.3  # the paper's alpha: swaps per text = max(1, int(0.3 * words))


def swap_words(text: str, n_swaps: int, rng: np.random.Generator) -> str:
    """``text`` with ``n_swaps`` random swaps of two words (split on single spaces).

    EDA's random swap, as PAC's authors augment: each swap draws two positions, drawing the
    second again up to three times while it equals the first (then that swap is skipped).

    >>> swap_words("a b", 1, np.random.default_rng(0)) in ("a b", "b a")
    True
    """
    words = text.split(" ")
    for _ in range(n_swaps):
        i = j = int(rng.integers(len(words)))
        for _ in range(4):
            j = int(rng.integers(len(words)))
            if j != i:
                words[i], words[j] = words[j], words[i]
                break
    return " ".join(words)


def augment(text: str, n: int, seed: int) -> list[str]:
    """``n`` word-swapped copies of ``text``; seeded by the seed and the text itself, so a
    text's copies do not depend on which texts are scored with it.
    """
    rng = np.random.default_rng([seed, int(text_hash(text)[:15], 16)])
    n_swaps = max(1, int(SWAP_RATIO * len(text.split(" "))))
    return [swap_words(text, n_swaps, rng) for _ in range(n)]


@dataclass(frozen=True)
class Augmented:
    """The target's scores of each text's augmented copies: ``copies[k]`` holds copy k of
    every text, in the texts' order.
    """

    copies: tuple[TokenScores, ...]

    def subset(self, indices: Iterable[int]) -> Augmented:
        idx = list(indices)
        return Augmented(tuple(c.subset(idx) for c in self.copies))


@register_view(
    "pac_augmented",
    description=(
        "the target on --pac-augmentations word-swapped copies of each text (seeded by --pac-seed)"
    ),
    cost="+1 target pass per augmentation (all copies in one scoring call)",
)
def pac_augmented(ctx: ViewContext, state: None) -> tuple[Augmented, dict]:
    n, k = len(ctx.texts), ctx.option("pac_augmentations")
    copies = [augment(t, k, ctx.option("pac_seed")) for t in ctx.texts]
    flat = [copies[i][j] for j in range(k) for i in range(n)]  # copy-major
    scores, stats = score_texts(
        ctx.target,
        flat,
        ctx.settings,
        cache_root=ctx.cache_root,
        progress=ctx.progress,
        stage="scoring augmented copies",
    )
    return Augmented(tuple(scores.subset(range(j * n, (j + 1) * n)) for j in range(k))), {
        "target": stats
    }


def polarized_distance(logp: np.ndarray, far: float, local: float) -> float:
    """Mean of the highest ``far`` share of the log-probabilities minus the mean of the lowest
    ``local`` share (at least one each).

    >>> polarized_distance(np.array([-1.0, -2.0, -3.0, -4.0]), 0.25, 0.5)
    2.5
    """
    ordered = np.sort(logp.astype(np.float64))
    if not len(ordered):
        return float("nan")
    n_far, n_local = max(1, int(far * len(ordered))), max(1, int(local * len(ordered)))
    return float(ordered[-n_far:].mean() - ordered[:n_local].mean())


@register(
    "pac",
    description=(
        "PAC: mean polarized distance of word-swapped copies minus the text's own (Ye et al. 2024)"
    ),
    needs=("pac_augmented",),
    cost="+1 target pass per augmentation (--pac-augmentations, default 2)",
    far=0.05,
    local=0.3,
)
def pac(inputs: AttackInputs, *, far: float, local: float) -> np.ndarray:
    # the authors' PAC is PD(x) - mean PD(copies), lower for members; negated here
    own = np.array([polarized_distance(t.logp, far, local) for t in inputs.target])
    copies = inputs.view("pac_augmented").copies
    calibration = np.mean(
        [[polarized_distance(t.logp, far, local) for t in c] for c in copies], axis=0
    )
    return calibration - own
