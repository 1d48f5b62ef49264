"""``memaudit mia``: score members and non-members once per view, run every attack, measure, write.

The whole attack suite costs one forward pass per text per view: the target model on the
texts, the target on the lowercased texts (only if an attack needs it), and the reference
model on the texts (only if given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from memaudit.attacks.views import (
    ViewContext,
    compute_views,
    prepare_views,
    select_attacks,
    view_warnings,
)
from memaudit.index.duplication import (
    bucket_order,
    corpus_counts,
    duplication_bucket,
    open_index_for,
)
from memaudit.io import rundir as rs
from memaudit.io.config import flag_of
from memaudit.io.progress import Progress
from memaudit.io.rundir import Timings
from memaudit.io.texts import Fields, TextRecord
from memaudit.metrics import mark_supported, membership_metrics, roc_curve, zero_fp_notes
from memaudit.models.hf import LoadOptions
from memaudit.models.sources import FILES, Sources
from memaudit.scoring.cache import resolve_cache_root
from memaudit.scoring.distributed import open_engine
from memaudit.scoring.engine import ScoreSettings

from .config import MiaConfig
from .sets import PreparedSets, prepare_read, read_labelled, read_two

MAX_ROC_POINTS = 2000


@dataclass
class MiaOutcome:
    out_dir: Path
    results: dict
    warnings: list[str] = field(default_factory=list)


def run_mia(
    config: MiaConfig, *, progress: Progress | None = None, sources: Sources = FILES
) -> MiaOutcome:
    """Run the membership-inference suite and write the run directory.

    Every input is checked before anything is written: a bad input raises and leaves no
    ``results.json`` behind. ``sources``: the texts and models the API was given by name
    (the command line reads files only).
    """
    timings = Timings()
    options = config.to_dict()
    specs, notes = select_attacks(
        config.attacks,
        given=lambda name: options[name] is not None,
        flag=partial(flag_of, MiaConfig),
    )
    settings = ScoreSettings(
        max_length=config.max_length,
        stride=config.stride,
        batch_tokens=config.batch_tokens,
        max_batch_size=config.max_batch_size,
        shard_texts=config.shard_texts,
    )
    with timings("prepare"):
        inp = _read_sets(
            config,
            reference=config.reference
            if any("reference" in s.attack.needs for s in specs)
            else None,
            sources=sources,
        )
        settings.window(inp.target)  # a bad window setting fails here, before any work
        index = open_index_for(config.index, inp.target) if config.index else None
        ctx = ViewContext(
            inp.target,
            [r.text for r in inp.records],
            settings,
            options,
            reference=inp.reference,
            token_ids=inp.target_ids,
            reference_token_ids=inp.reference_ids,
            cache_root=resolve_cache_root(config.cache_dir, config.no_cache),
            progress=progress,
            index=index,
        )
        prepared = prepare_views(specs, ctx)
        warnings = [*inp.warnings, *view_warnings(prepared)]
        engine = open_engine(  # a Ray address that does not answer fails here, before the run dir
            config.engine,
            address=config.ray_address,
            workers=config.ray_workers,
            device=config.device,
            trust_remote_code=config.trust_remote_code,
        )
    run = rs.RunDir.begin(config.out, "mia", config)
    out = run.path
    with timings("scoring"), engine:
        views, view_stats = compute_views(specs, ctx, prepared)
    with timings("attacks_and_metrics"):
        labels = np.array([r.label for r in inp.records])
        attack_scores = {s.column: s(views) for s in specs}
        metrics = {col: _metrics(v, labels, config) for col, v in attack_scores.items()}

        by_duplication, dup_columns = {}, {}
        if index is not None:
            counts = corpus_counts(index, inp.target_ids)
            buckets = np.array([duplication_bucket(int(c)) for c in counts])
            by_duplication = _metrics_by_bucket(attack_scores, labels, buckets, config)
            dup_columns = {"corpus_count": counts.tolist(), "duplication": buckets.tolist()}

    columns = {**_score_columns(inp.records, views.target.n_tokens, attack_scores), **dup_columns}
    run.write_scores(columns)
    target, reference = inp.target, inp.reference
    results = {
        **run.header({"target": target, "reference": reference}),
        "score_settings": {
            **settings.__dict__,
            "window": dict(zip(("max_length", "stride"), settings.window(target))),
        },
        "reference_tokenizer_differs": bool(
            reference and reference.tokenizer_fingerprint != target.tokenizer_fingerprint
        ),
        "data": {
            "members": {"path": config.members or config.data, "n": int((labels == 1).sum())},
            "nonmembers": {
                "path": config.nonmembers or config.data,
                "n": int((labels == 0).sum()),
            },
            "skipped": [s.to_dict() for s in inp.skipped],
            "max_tokens_per_text": config.max_tokens_per_text or None,
            "texts_cut": inp.texts_cut,
        },
        "attacks": {
            s.column: {
                "name": s.attack.name,
                "params": s.params,
                "description": s.attack.description,
                "cost": s.attack.cost,
            }
            for s in specs
        },
        "metrics": metrics,
        **(
            {"index": index.describe(), "by_duplication": by_duplication}
            if index is not None
            else {}
        ),
        "roc": {col: _roc_points(v, labels) for col, v in attack_scores.items()},
        "scoring": {model: st.__dict__ for model, st in view_stats.items()},
        "engine": engine.describe(),
        "timings_s": timings.seconds,
        "warnings": warnings,
        "notes": [
            *notes,
            *_cut_note(inp.texts_cut, config.max_tokens_per_text),
            *zero_fp_notes(int((labels == 0).sum()), shown_as_na=True),
        ],
    }
    render = None
    if config.report:
        from memaudit.report import write_mia_report

        render = partial(write_mia_report, columns=columns)
    run.finish(results, render)
    return MiaOutcome(out, results, warnings)


def _read_sets(config: MiaConfig, *, reference: str | None, sources: Sources) -> PreparedSets:
    """The two sets, from --members/--nonmembers or one labelled --data file, checked."""
    if config.data is None:
        paths = (config.members or "", config.nonmembers or "")  # both given: __post_init__
        pos, neg = read_two(*paths, skip_invalid=config.skip_invalid, sources=sources)
    else:
        pair = config.pair()
        pos, neg = read_labelled(
            config.data,
            fields=Fields(text=config.text_field, label=config.label_field),
            pair=(pair[0], pair[1]) if pair else None,
            skip_invalid=config.skip_invalid,
            sources=sources,
        )
        paths = (config.data, config.data)
    return prepare_read(
        pos,
        neg,
        paths,
        model=config.model,
        reference=reference,
        options=LoadOptions(
            dtype=config.dtype,
            device=config.device,
            trust_remote_code=config.trust_remote_code,
            device_map=config.device_map,
            bos=config.bos,
        ),
        adapter=config.adapter,
        skip_invalid=config.skip_invalid,
        max_tokens=config.max_tokens_per_text,
        sources=sources,
    )


def _cut_note(n_cut: int, limit: int) -> list[str]:
    if not n_cut:
        return []
    return [
        f"{n_cut} text(s) longer than {limit} target tokens were cut to their first {limit} "
        "(--max-tokens-per-text; 0 scores whole texts)"
    ]


def _score_columns(
    records: list[TextRecord], n_tokens, attack_scores: dict[str, np.ndarray]
) -> dict[str, list]:
    columns: dict[str, list] = {
        "id": [r.id for r in records],
        "label": [r.label for r in records],
        "n_tokens": [int(n) for n in n_tokens],
        "source": [r.where for r in records],
    }
    columns.update(
        rs.metadata_columns(
            [r.meta for r in records], set(rs.RESERVED_COLUMNS) | set(attack_scores)
        )
    )
    columns.update({k: v.tolist() for k, v in attack_scores.items()})
    return columns


def _metrics(scores: np.ndarray, labels: np.ndarray, config: MiaConfig) -> dict[str, dict]:
    """AUC and TPR at each FPR bound with CIs; a bound the non-members cannot show is marked
    ``supported: false`` (there the value is the TPR at zero false positives).
    """
    estimates = membership_metrics(scores, labels, n_bootstrap=config.n_bootstrap, seed=config.seed)
    return mark_supported({k: e.to_dict() for k, e in estimates.items()}, int((labels == 0).sum()))


def _metrics_by_bucket(
    attack_scores: dict[str, np.ndarray], labels: np.ndarray, buckets: np.ndarray, config: MiaConfig
) -> dict:
    """Each duplication bucket's members against all non-members: does duplication make
    membership easier to see?
    """
    out = {}
    for b in bucket_order(buckets[labels == 1].tolist()):
        keep = (labels == 0) | (buckets == b)
        out[b] = {
            "members": int(((labels == 1) & keep).sum()),
            "metrics": {
                col: _metrics(v[keep], labels[keep], config) for col, v in attack_scores.items()
            },
        }
    return out


def _roc_points(scores: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    fpr, tpr, _ = roc_curve(scores, labels)
    if len(fpr) > MAX_ROC_POINTS:  # keep the curve's shape, including its low-FPR end
        keep = np.unique(
            np.r_[
                np.linspace(0, len(fpr) - 1, MAX_ROC_POINTS).astype(int),
                np.arange(min(200, len(fpr))),
            ]
        )
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
