"""Every scored view the chosen attacks need, one forward pass per text per model.

An attack declares the views it needs (``lowercase``, ``reference``) in ``needs``; here each
view is computed once for all attacks, so the whole suite costs one pass per text per view.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from memaudit.io.progress import Progress
from memaudit.models.base import CausalLM
from memaudit.scoring.engine import ScoreSettings, ScoreStats, score_texts

from .base import AttackInputs

TokenIds = Sequence[Sequence[int]]


def score_views(
    target: CausalLM,
    reference: CausalLM | None,
    texts: list[str],
    settings: ScoreSettings,
    *,
    lowercase: bool,
    cache_root: str | Path | None = None,
    token_ids: tuple[TokenIds | None, TokenIds | None] = (None, None),
    progress: Progress | None = None,
) -> tuple[AttackInputs, dict[str, ScoreStats]]:
    """Every scored view the attacks need, one forward pass per text per model.

    The lowercased texts go through the target model in the same call as the texts, so a
    text that is already lower case is scored once and the batches stay full.
    """
    n = len(texts)
    target_texts = list(texts)
    ids = None if token_ids[0] is None else list(token_ids[0])
    if lowercase:
        lowered = [x.lower() for x in texts]
        target_texts += lowered
        ids = None if ids is None else [*ids, *target.encode(lowered)]
    both, stats = score_texts(
        target,
        target_texts,
        settings,
        cache_root=cache_root,
        token_ids=ids,
        progress=progress,
        stage="scoring target",
    )
    view_stats = {"target": stats}
    views = {"target": both.subset(range(n)) if lowercase else both}
    if lowercase:
        views["lowercase"] = both.subset(range(n, 2 * n))
    if reference is not None:
        views["reference"], view_stats["reference"] = score_texts(
            reference,
            texts,
            settings,
            cache_root=cache_root,
            token_ids=token_ids[1],
            progress=progress,
            stage="scoring reference",
        )
    return AttackInputs(list(texts), **views), view_stats
