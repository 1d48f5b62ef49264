"""``memaudit mia``: score members and non-members once per view, run every attack, measure, write.

The whole attack suite costs one forward pass per text per view: the target model on the
texts, the target on the lowercased texts (only if an attack needs it), and the reference
model on the texts (only if given).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from memaudit.io import rundir as rs
from memaudit.attacks import AttackInputs, AttackSpec, parse_attacks
from memaudit.scoring.cache import resolve_cache_root
from memaudit.io.config import MiaConfig
from memaudit.io.texts import Skipped, TextRecord, read_texts, text_hash
from memaudit.index.duplication import bucket_order, corpus_counts, duplication_bucket, open_index_for
from memaudit.errors import InputError
from memaudit.metrics import membership_metrics, roc_curve
from memaudit.models.hf import LoadOptions, load_causal_lm
from memaudit.scoring.engine import ScoreSettings, ScoreStats, score_texts

StageProgress = Callable[[str, int, int], None]  # (stage, done, total)
MAX_ROC_POINTS = 2000


@dataclass
class MiaOutcome:
    out_dir: Path
    results: dict
    warnings: list[str] = field(default_factory=list)


def select_attacks(spec: str, *, has_reference: bool) -> tuple[list[AttackSpec], list[str]]:
    """Parse the attack list; under "all", attacks needing an absent reference are left out with a note."""
    specs = parse_attacks(spec)
    notes = []
    if not has_reference:
        needing = [s for s in specs if "reference" in s.attack.needs]
        if needing and spec.strip() != "all":
            raise InputError(f"attack '{needing[0].column}' needs a reference model: pass --reference DIR")
        if needing:
            notes.append("attack 'reference' left out: no --reference model given")
        specs = [s for s in specs if "reference" not in s.attack.needs]
    return specs, notes


@dataclass
class PreparedSets:
    """Everything checked and loaded before a single output file is touched."""

    records: list[TextRecord]
    skipped: list[Skipped]
    warnings: list[str]
    target: object
    reference: object | None
    target_ids: list[list[int]]
    reference_ids: list[list[int]] | None


def run_mia(config: MiaConfig, *, progress: StageProgress | None = None) -> MiaOutcome:
    """Run the membership-inference suite and write the run directory.

    Every input is checked before anything is written: a bad input raises and leaves no
    ``results.json`` behind.
    """
    timings = Timings()
    specs, notes = select_attacks(config.attacks, has_reference=config.reference is not None)
    settings = ScoreSettings(
        max_length=config.max_length,
        stride=config.stride,
        batch_tokens=config.batch_tokens,
        max_batch_size=config.max_batch_size,
        shard_texts=config.shard_texts,
    )
    with timings("prepare"):
        inp = prepare_sets(
            config.members,
            config.nonmembers,
            model=config.model,
            reference=config.reference if any("reference" in s.attack.needs for s in specs) else None,
            options=LoadOptions(dtype=config.dtype, device=config.device, trust_remote_code=config.trust_remote_code),
            skip_invalid=config.skip_invalid,
        )
        settings.window(inp.target)  # a bad window setting fails here, before any work
        index = open_index_for(config.index, inp.target) if config.index else None
    with timings("scoring"):
        views, view_stats = score_views(
            inp.target,
            inp.reference,
            [r.text for r in inp.records],
            settings,
            lowercase=any("lowercase" in s.attack.needs for s in specs),
            cache_root=resolve_cache_root(config.cache_dir, config.no_cache),
            token_ids=(inp.target_ids, inp.reference_ids),
            progress=progress,
        )
    with timings("attacks_and_metrics"):
        labels = np.array([r.label for r in inp.records])
        attack_scores = {s.column: s(views) for s in specs}
        metrics = {
            col: {k: e.to_dict() for k, e in membership_metrics(v, labels, n_bootstrap=config.n_bootstrap, seed=config.seed).items()}
            for col, v in attack_scores.items()
        }

        by_duplication, dup_columns = {}, {}
        if index is not None:
            counts = corpus_counts(index, inp.target_ids)
            buckets = np.array([duplication_bucket(int(c)) for c in counts])
            by_duplication = _metrics_by_bucket(attack_scores, labels, buckets, config)
            dup_columns = {"corpus_count": counts.tolist(), "duplication": buckets.tolist()}

    out = rs.begin_run(config.out)
    columns = {**_score_columns(inp.records, views.target.n_tokens, attack_scores), **dup_columns}
    rs.write_scores(out, columns)
    target, reference = inp.target, inp.reference
    results = {
        **rs.run_header("mia", config, {"target": target, "reference": reference}),
        "score_settings": {**settings.__dict__, "window": dict(zip(("max_length", "stride"), settings.window(target)))},
        "reference_tokenizer_differs": bool(reference and reference.tokenizer_fingerprint != target.tokenizer_fingerprint),
        "data": {
            "members": {"path": config.members, "n": int((labels == 1).sum())},
            "nonmembers": {"path": config.nonmembers, "n": int((labels == 0).sum())},
            "skipped": [s.to_dict() for s in inp.skipped],
        },
        "attacks": {s.column: {"name": s.attack.name, "params": s.params, "description": s.attack.description} for s in specs},
        "metrics": metrics,
        **({"index": index.describe(), "by_duplication": by_duplication} if index is not None else {}),
        "roc": {col: _roc_points(v, labels) for col, v in attack_scores.items()},
        "scoring": {model: st.__dict__ for model, st in view_stats.items()},
        "timings_s": timings.seconds,
        "warnings": inp.warnings,
        "notes": notes,
    }
    if config.report:
        from memaudit.report import write_mia_report

        write_mia_report(out, results, columns)
    rs.write_results(out, results)
    return MiaOutcome(out, results, inp.warnings)


def prepare_sets(
    positives: str,
    negatives: str,
    *,
    model: str,
    reference: str | None,
    options: LoadOptions,
    skip_invalid: bool,
    names: tuple[str, str] = ("members", "non-members"),
) -> PreparedSets:
    """Read two labelled sets (1 and 0), load the models, tokenize and check every text.

    Everything that can be wrong with the input fails here, before any output is written.
    """
    pos = read_texts(positives, label=1, skip_invalid=skip_invalid)
    neg = read_texts(negatives, label=0, skip_invalid=skip_invalid)
    target = load_causal_lm(model, options)
    ref = load_causal_lm(reference, options) if reference else None
    records, target_ids, ref_ids, short = tokenize_and_check(target, ref, pos.records + neg.records, skip_invalid)
    for label, name, path in ((1, names[0], positives), (0, names[1], negatives)):
        if not any(r.label == label for r in records):
            raise InputError(f"no valid {name} left to score", path=path)
    warnings = overlap_warnings(pos.records, neg.records, names)
    return PreparedSets(records, pos.skipped + neg.skipped + short, warnings, target, ref, target_ids, ref_ids)


class Timings:
    """``with timings("stage"):`` adds the stage's wall time; ``total`` covers them all."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str):
        t = time.perf_counter()
        yield
        self.seconds[stage] = time.perf_counter() - t
        self.seconds["total"] = time.perf_counter() - self._start


def score_views(
    target,
    reference,
    texts: list[str],
    settings: ScoreSettings,
    *,
    lowercase: bool,
    cache_root=None,
    token_ids=(None, None),
    progress: StageProgress | None = None,
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
        ids = None if ids is None else ids + target.encode(lowered)
    stage = lambda name: (lambda d, total: progress(f"scoring {name}", d, total)) if progress else None  # noqa: E731
    both, stats = score_texts(target, target_texts, settings, cache_root=cache_root, token_ids=ids, progress=stage("target"))
    view_stats = {"target": stats}
    views = {"target": both.subset(range(n)) if lowercase else both}
    if lowercase:
        views["lowercase"] = both.subset(range(n, 2 * n))
    if reference is not None:
        views["reference"], view_stats["reference"] = score_texts(
            reference, texts, settings, cache_root=cache_root, token_ids=token_ids[1], progress=stage("reference")
        )
    return AttackInputs(list(texts), **views), view_stats


def overlap_warnings(first: list[TextRecord], second: list[TextRecord], names=("members", "non-members")) -> list[str]:
    shared = {text_hash(r.text) for r in first} & {text_hash(r.text) for r in second}
    if not shared:
        return []
    return [f"{len(shared)} text(s) appear among both {names[0]} and {names[1]}"]


def tokenize_and_check(target, reference, records, skip_invalid):
    """Token ids under each model; a text with fewer than 2 tokens has nothing to score."""
    models = [("target", target)] + ([("reference", reference)] if reference is not None else [])
    ids = {name: m.encode([r.text for r in records]) for name, m in models}
    keep, skipped = [], []
    for i, r in enumerate(records):
        bad = next((name for name, _ in models if len(ids[name][i]) < 2), None)
        if bad is None:
            keep.append(i)
            continue
        reason = f"text has {len(ids[bad][i])} token(s) under the {bad} tokenizer; at least 2 are needed"
        if not skip_invalid:
            raise InputError(reason, path=r.path, line=r.line)
        skipped.append(Skipped(r.path or r.id, r.line, reason))
    pick = lambda seq: [seq[i] for i in keep]  # noqa: E731
    return pick(records), pick(ids["target"]), pick(ids["reference"]) if reference is not None else None, skipped


def _score_columns(records: list[TextRecord], n_tokens, attack_scores: dict[str, np.ndarray]) -> dict[str, list]:
    columns = {
        "id": [r.id for r in records],
        "label": [r.label for r in records],
        "n_tokens": [int(n) for n in n_tokens],
        "source": [r.where for r in records],
    }
    columns.update(rs.metadata_columns([r.meta for r in records], set(rs.RESERVED_COLUMNS) | set(attack_scores)))
    columns.update({k: v.tolist() for k, v in attack_scores.items()})
    return columns


def _metrics_by_bucket(attack_scores: dict[str, np.ndarray], labels: np.ndarray, buckets: np.ndarray, config: MiaConfig) -> dict:
    """Each duplication bucket's members against all non-members: does duplication make membership easier to see?"""
    out = {}
    for b in bucket_order(buckets[labels == 1].tolist()):
        keep = (labels == 0) | (buckets == b)
        out[b] = {
            "members": int(((labels == 1) & keep).sum()),
            "metrics": {
                col: {k: e.to_dict() for k, e in membership_metrics(v[keep], labels[keep], n_bootstrap=config.n_bootstrap, seed=config.seed).items()}
                for col, v in attack_scores.items()
            },
        }
    return out


def _roc_points(scores: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    fpr, tpr, _ = roc_curve(scores, labels)
    if len(fpr) > MAX_ROC_POINTS:  # keep the curve's shape, including its low-FPR end
        keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, MAX_ROC_POINTS).astype(int), np.arange(min(200, len(fpr)))])
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
