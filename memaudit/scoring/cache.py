"""The on-disk score cache: shards of per-token scores, content-addressed, written atomically.

Layout: ``<root>/<scorer key>/shard-<id>.npz``. The scorer key hashes everything that
decides the numbers (model and tokenizer fingerprints, window settings, dtype, engine
version). A shard holds the scores of a group of texts and the sha256 of each text, so any
text ever scored under a key is found again, whatever dataset it arrives in. A shard file
exists only once complete (written to a temp file, then renamed), so a killed run leaves
nothing half-written and a restarted one skips every finished shard.

Each shard carries a checksum of its arrays. A shard that cannot be read or fails its
checksum (truncated, bit-flipped) is never used: it is moved aside to ``*.npz.corrupt``, a
:class:`CorruptShardWarning` names it, and its texts count as not cached, so they are
scored again. Wrong numbers are never returned.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from memaudit.errors import MemauditWarning
from memaudit.io.atomic import atomic_output

from .tokenscores import TextScores

ARRAYS = ("token_ids", "logp", "mu", "sigma", "is_argmax")
INDEX = ("hashes", "token_offsets", "scored_offsets")
# what a damaged .npz raises on open or read: zip structure, deflate stream, array header
UNREADABLE = (zipfile.BadZipFile, zlib.error, ValueError, KeyError, OSError, EOFError)


class CorruptShardWarning(MemauditWarning):
    """A cache shard was unreadable or failed its checksum; its texts are scored again."""


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """blake2b over every array's name, dtype, shape and bytes, in a fixed order."""
    h = hashlib.blake2b(digest_size=20)
    for name in (*INDEX, *ARRAYS):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def default_cache_root() -> Path:
    env = os.environ.get("MEMAUDIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "memaudit"


class ScoreCache:
    """Shards of :class:`TextScores` under one scorer key. ``root=None`` keeps nothing."""

    def __init__(self, root: str | Path | None, scorer_key: str) -> None:
        self.dir = None if root is None else Path(root) / scorer_key
        self._where: dict[str, tuple[Path, int]] = {}
        self.set_aside: list[Path] = []  # corrupt shards found by this cache
        if self.dir is not None and self.dir.is_dir():
            for shard in sorted(self.dir.glob("shard-*.npz")):
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        hashes = [h.decode() for h in z["hashes"]]
                except UNREADABLE as e:
                    self._set_aside(shard, e)
                    continue
                for row, h in enumerate(hashes):
                    self._where[h] = (shard, row)

    def __contains__(self, text_hash: str) -> bool:
        return text_hash in self._where

    def load(self, hashes: list[str]) -> dict[str, TextScores]:
        """Scores of the given (cached) text hashes, reading each shard once.

        The texts of a shard that fails its checksum are left out of the answer (and out
        of the cache from then on): the caller scores them again.
        """
        by_shard: dict[Path, list[tuple[str, int]]] = {}
        for h in hashes:
            shard, row = self._where[h]
            by_shard.setdefault(shard, []).append((h, row))
        out = {}
        for shard, items in by_shard.items():
            arrays = self._read_verified(shard)
            if arrays is None:
                continue
            tok_off, sc_off = arrays["token_offsets"], arrays["scored_offsets"]
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
        if self.dir is None or not scores:
            return None
        shard = write_shard(self.dir, scores)
        for row, h in enumerate(scores):
            self._where[h] = (shard, row)
        return shard

    def _read_verified(self, shard: Path) -> dict[str, np.ndarray] | None:
        """Every array of ``shard`` if it reads whole and matches its checksum, else None."""
        try:
            with np.load(shard, allow_pickle=False) as z:
                arrays = {name: z[name] for name in (*INDEX, *ARRAYS, "checksum")}
        except UNREADABLE as e:
            self._set_aside(shard, e)
            return None
        if str(arrays["checksum"]) != checksum(arrays):
            self._set_aside(shard, "its checksum does not match its contents")
            return None
        return arrays

    def _set_aside(self, shard: Path, why: object) -> None:
        """Never read ``shard`` again: forget its texts, rename it ``*.corrupt``, and warn."""
        self._where = {h: where for h, where in self._where.items() if where[0] != shard}
        aside = shard.with_name(shard.name + ".corrupt")
        try:
            shard.replace(aside)
        except OSError:
            aside = shard  # a read-only cache: it stays, and is skipped again next time
        self.set_aside.append(aside)
        reason = why if isinstance(why, str) else f"{type(why).__name__}: {why}"
        warnings.warn(
            f"corrupt score-cache shard {shard} ({reason}); its texts are scored again "
            f"(the file is kept as {aside.name})",
            CorruptShardWarning,
            stacklevel=3,
        )


def write_shard(directory: Path, scores: dict[str, TextScores]) -> Path:
    """Write ``scores`` as one shard in ``directory`` (temp file + rename); its name hashes the
    text hashes, so whoever writes the same texts writes the same file (a Ray worker too).
    """
    directory.mkdir(parents=True, exist_ok=True)
    hashes = list(scores)
    shard = directory / f"shard-{hashlib.sha256(''.join(hashes).encode()).hexdigest()[:20]}.npz"
    items = [scores[h] for h in hashes]
    tok_off = np.concatenate([[0], np.cumsum([len(t.token_ids) for t in items])]).astype(np.int64)
    sc_off = np.concatenate([[0], np.cumsum([len(t.logp) for t in items])]).astype(np.int64)
    payload = {name: np.concatenate([getattr(t, name) for t in items]) for name in ARRAYS}
    arrays = {"hashes": np.array(hashes, dtype="S64"), "token_offsets": tok_off}
    arrays |= {"scored_offsets": sc_off, **payload}
    arrays["checksum"] = np.array(checksum(arrays))
    with atomic_output(shard) as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    return shard


def resolve_cache_root(cache_dir: str | None, no_cache: bool) -> Path | None:
    """The cache root a command uses: none with ``no_cache``, else the given dir, else the
    default.
    """
    if no_cache:
        return None
    return Path(cache_dir) if cache_dir else default_cache_root()
