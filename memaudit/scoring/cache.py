"""The on-disk score cache: shards of per-token scores, content-addressed, written atomically.

Layout: ``<root>/<scorer key>/shard-<id>.npz``. The scorer key hashes everything that
decides the numbers (model and tokenizer fingerprints, window settings, dtype, engine
version). A shard holds the scores of a group of texts and the sha256 of each text, so any
text ever scored under a key is found again, whatever dataset it arrives in. A shard file
exists only once complete (written to a temp file, then renamed), so a killed run leaves
nothing half-written and a restarted one skips every finished shard.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from memaudit.io.atomic import atomic_output

from .tokenscores import TextScores

ARRAYS = ("token_ids", "logp", "mu", "sigma", "is_argmax")


def default_cache_root() -> Path:
    env = os.environ.get("MEMAUDIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "memaudit"


class ScoreCache:
    """Shards of :class:`TextScores` under one scorer key. ``root=None`` keeps nothing."""

    def __init__(self, root: str | Path | None, scorer_key: str) -> None:
        self.dir = None if root is None else Path(root) / scorer_key
        self._where: dict[str, tuple[Path, int]] = {}
        if self.dir is not None and self.dir.is_dir():
            for shard in sorted(self.dir.glob("shard-*.npz")):
                with np.load(shard, allow_pickle=False) as z:
                    for row, h in enumerate(z["hashes"]):
                        self._where[h.decode()] = (shard, row)

    def __contains__(self, text_hash: str) -> bool:
        return text_hash in self._where

    def load(self, hashes: list[str]) -> dict[str, TextScores]:
        """Scores of the given (cached) text hashes, reading each shard once."""
        by_shard: dict[Path, list[tuple[str, int]]] = {}
        for h in hashes:
            shard, row = self._where[h]
            by_shard.setdefault(shard, []).append((h, row))
        out = {}
        for shard, items in by_shard.items():
            with np.load(shard, allow_pickle=False) as z:
                arrays = {name: z[name] for name in ARRAYS}
                tok_off, sc_off = z["token_offsets"], z["scored_offsets"]
            for h, row in items:
                t = slice(tok_off[row], tok_off[row + 1])
                s = slice(sc_off[row], sc_off[row + 1])
                out[h] = TextScores(
                    arrays["token_ids"][t],
                    arrays["logp"][s],
                    arrays["mu"][s],
                    arrays["sigma"][s],
                    arrays["is_argmax"][s],
                )
        return out

    def save(self, scores: dict[str, TextScores]) -> Path | None:
        """Write one shard atomically and index it."""
        if self.dir is None:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        hashes = list(scores)
        shard = self.dir / f"shard-{hashlib.sha256(''.join(hashes).encode()).hexdigest()[:20]}.npz"
        items = [scores[h] for h in hashes]
        tok_off = np.concatenate([[0], np.cumsum([len(t.token_ids) for t in items])]).astype(
            np.int64
        )
        sc_off = np.concatenate([[0], np.cumsum([len(t.logp) for t in items])]).astype(np.int64)
        payload = {name: np.concatenate([getattr(t, name) for t in items]) for name in ARRAYS}
        with atomic_output(shard) as fh:
            arrays = {"hashes": np.array(hashes, dtype="S64"), "token_offsets": tok_off}
            arrays |= {"scored_offsets": sc_off, **payload}
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        for row, h in enumerate(hashes):
            self._where[h] = (shard, row)
        return shard


def resolve_cache_root(cache_dir: str | None, no_cache: bool) -> Path | None:
    """The cache root a command uses: none with ``no_cache``, else the given dir, else the
    default.
    """
    if no_cache:
        return None
    return Path(cache_dir) if cache_dir else default_cache_root()
