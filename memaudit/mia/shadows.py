"""``memaudit shadows train``: N shadow models, each on a seeded half of a text pool.

LiRA's balanced membership: every pool text is in exactly half of the shadows. Each shadow is
an ordinary ``memaudit train`` run (:func:`memaudit.lab.train.run_train`) on its half, so it
costs what ``memaudit train`` costs on the same data and resumes the same way. The dir::

    DIR/pool.jsonl        the pool as read (id, text), in order: column j of the matrix
    DIR/membership.npz    "membership": (shadows, texts) bool
    DIR/halves/model-i.jsonl  the texts shadow i trains on
    DIR/tokenizer/        the shared tokenizer, when no --tokenizer is given
    DIR/model-i/          shadow i, a normal model dir
    DIR/plan.json         the identity of the settings and pool (written first)
    DIR/shadows.json      written last: config, seeds, fingerprints; its presence = finished

A killed run started again with the same settings skips finished shadows and resumes the
unfinished one from its checkpoint, ending with the same weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from memaudit.attacks.shadows import MEMBERSHIP, POOL, RECORD, model_name
from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.atomic import atomic_output, write_text_atomic
from memaudit.io.outdir import prepare_out_dir
from memaudit.io.progress import Progress
from memaudit.io.texts import TextRecord, read_texts, text_hash, write_texts
from memaudit.lab.config import TrainConfig
from memaudit.lab.train import run_train

from .config import ShadowsTrainConfig

PLAN = "plan.json"
HALVES = "halves"
TOKENIZER = "tokenizer"


def balanced_membership(n_models: int, n_texts: int, *, seed: int) -> np.ndarray:
    """(n_models, n_texts) bool: each text IN for exactly half of the shadows, seeded.

    As LiRA's code does: per text, the shadows ranked by uniform draws; the first half keep it.
    """
    draws = np.random.default_rng(seed).uniform(size=(n_models, n_texts))
    return draws.argsort(axis=0).argsort(axis=0) < n_models // 2


def read_pool(path: str) -> list[TextRecord]:
    """The pool's records; a text given twice is an error naming both lines (a text's
    membership must be one column).
    """
    records = read_texts(path).records
    seen: dict[str, TextRecord] = {}
    for r in records:
        if r.text in seen:
            raise InputError(
                f"the same text as line {seen[r.text].line} (pool texts must be distinct)",
                path=r.path,
                line=r.line,
            )
        seen[r.text] = r
    return records


def run_shadows_train(config: ShadowsTrainConfig, *, progress: Progress | None = None) -> Path:
    """Train every shadow not yet trained, and write the shadows dir (``shadows.json`` last)."""
    out = Path(config.out)
    records = read_pool(config.pool)  # a bad pool fails here, before anything is written
    given_tokenizer = _given_tokenizer(config.tokenizer)
    inputs = _identity_inputs(config, records, given_tokenizer)
    identity = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    prepare_out_dir(
        out, kind="shadows", inputs=[config.pool, config.tokenizer], overwrite=config.overwrite
    )
    if _settle_earlier_run(out, identity, overwrite=config.overwrite):
        return out
    write_text_atomic(out / PLAN, json.dumps({"identity": identity, **inputs}, indent=2) + "\n")
    membership = balanced_membership(config.n_models, len(records), seed=config.seed)
    write_texts(out / POOL, [(r.id, r.text) for r in records])
    with atomic_output(out / MEMBERSHIP) as fh:
        np.savez(fh, membership=membership)
    tokenizer = config.tokenizer or str(_pool_tokenizer(out, records, config.vocab_size))
    shadows = []
    for i in range(config.n_models):
        half = write_texts(
            out / HALVES / f"{model_name(i)}.jsonl",
            [(r.id, r.text) for r, keep in zip(records, membership[i]) if keep],
        )
        t0 = time.perf_counter()
        model_dir = run_train(_train_config(config, i, half, tokenizer), progress=progress)
        record = json.loads((model_dir / "memaudit_train.json").read_text())
        shadows.append(
            {
                "dir": model_name(i),
                "seed": config.seed + i,
                "n_texts": int(membership[i].sum()),
                "fingerprint": _fingerprint(model_dir),
                "train_identity": record["identity"],
                "seconds_this_session": time.perf_counter() - t0,
            }
        )
        if progress is not None:
            progress("shadows", i + 1, config.n_models, f"{model_name(i)} done")
    result = {
        "schema_version": rs.SCHEMA_VERSION,
        "command": "shadows train",
        "config": asdict(config),
        "identity": identity,
        "identity_inputs": inputs,
        **rs.environment(),
        "n_models": config.n_models,
        "n_texts": len(records),
        "tokenizer": tokenizer,
        "shadows": shadows,
    }
    write_text_atomic(out / RECORD, json.dumps(rs.jsonable(result), indent=2) + "\n")
    return out


def _train_config(config: ShadowsTrainConfig, i: int, half: Path, tokenizer: str) -> TrainConfig:
    """Shadow i's ``memaudit train`` settings: the shared ones, its half, seed + i."""
    return TrainConfig(
        out=str(Path(config.out) / model_name(i)),
        corpus=str(half),
        model_size=config.model_size,
        steps=config.steps,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        lr=config.lr,
        warmup=config.warmup,
        vocab_size=config.vocab_size,
        context=config.context,
        seed=config.seed + i,
        checkpoint_every=config.checkpoint_every,
        tokenizer=tokenizer,
        device=config.device,
    )


def _identity_inputs(
    config: ShadowsTrainConfig, records: list[TextRecord], tokenizer: str | None
) -> dict[str, Any]:
    """What decides the shadows: the settings that shape them, the pool's texts (in order)
    and the given tokenizer, by content; not the paths, device or checkpoint interval.
    """
    not_identity = {"out", "overwrite", "device", "checkpoint_every", "pool", "tokenizer"}
    pool = hashlib.sha256("".join(text_hash(r.text) for r in records).encode()).hexdigest()
    return {
        **{k: v for k, v in asdict(config).items() if k not in not_identity},
        "pool": pool[:16],
        "tokenizer": tokenizer,
    }


def _given_tokenizer(path: str | None) -> str | None:
    """The fingerprint of the --tokenizer dir, checked to hold tokenizer files."""
    if path is None:
        return None
    p = Path(path)
    if not any((p / n).is_file() for n in ("tokenizer.json", "vocab.json")):
        raise InputError("--tokenizer: no tokenizer files in this dir", path=path)
    from memaudit.models.hf import tokenizer_fingerprint

    return tokenizer_fingerprint(p)


def _stored_identity(out: Path) -> str | None:
    for name in (RECORD, PLAN):
        if (out / name).is_file():
            return json.loads((out / name).read_text()).get("identity")
    return None


def _settle_earlier_run(out: Path, identity: str, *, overwrite: bool) -> bool:
    """Whether ``out`` already holds these shadows, finished; shadows of other settings are an
    error, or with ``overwrite`` are removed (memaudit's own files only).
    """
    stored = _stored_identity(out)
    if stored is None or stored == identity:
        return stored is not None and (out / RECORD).is_file()
    if not overwrite:
        raise InputError(
            "holds shadows of other settings or another pool; choose another --out, or pass "
            "--overwrite to train anew",
            path=str(out),
        )
    for name in (RECORD, PLAN, POOL, MEMBERSHIP):
        (out / name).unlink(missing_ok=True)
    for d in [out / HALVES, out / TOKENIZER, *out.glob("model-*")]:
        shutil.rmtree(d, ignore_errors=True)
    return False


def _pool_tokenizer(out: Path, records: list[TextRecord], vocab_size: int) -> Path:
    """One tokenizer for every shadow, trained on the pool once (kept for a resumed run)."""
    path = out / TOKENIZER
    if (path / "tokenizer.json").is_file():
        return path
    from memaudit.lab.lm import train_bpe_tokenizer

    tmp = out / f".{TOKENIZER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    train_bpe_tokenizer([r.text for r in records], vocab_size=vocab_size).save_pretrained(tmp)
    tmp.rename(path)
    return path


def _fingerprint(model_dir: Path) -> str:
    from memaudit.models.hf import model_fingerprint

    return model_fingerprint(model_dir)
