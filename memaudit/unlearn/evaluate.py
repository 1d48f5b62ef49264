"""``memaudit unlearn-eval``: is it gone, and what did removing it cost? Hard to fool by design.

Every model (the original, each unlearned one, the retrained gold standard) is measured the
same way, from one scoring pass per text (cached, so the original is never scored twice):

- forget-set extraction: exact from the argmax flags of the scoring pass (greedy decoding
  reproduces the continuation exactly iff every continuation token is the argmax), loose
  from one batched greedy generation;
- membership inference, forget vs holdout, with the lab's attacks (ideal: the retrained
  model's AUC, near 0.5);
- NLL on retain texts (and its change from the original, paired) and on a general corpus;
- a relearning attack: a few fine-tuning steps on half of the forget set, then extraction
  and NLL on the other half (forgetting that is only suppression comes back);
- calibration: checkpoints along each method's run (``unlearn --save-every``) give a
  forget-vs-retain trade-off curve; methods are compared at matched retain cost;
- a quantization attack: each model re-measured (forget extraction, MIA, retain NLL) after
  round-to-nearest weight quantization to each ``--quant-bits`` width (``quantize.py``), and
  flagged when its forgetting does not survive (``compare.quantization_recovery``);
- against the retrained model, when there is one: TOFU's forget quality, MUSE's PrivLeak and the
  over-/under-unlearning flags (``compare.against_retrained``).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memaudit.attacks import parse_attacks
from memaudit.attacks.views import score_views
from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.corpus import corpus_chunks, load_corpus
from memaudit.io.texts import Skipped, TextRecord
from memaudit.lab.evaluate import LAB_ATTACKS
from memaudit.lab.lm import EOS
from memaudit.lab.verbatim import compare
from memaudit.metrics import membership_metrics, wilson_interval
from memaudit.models.generation import greedy_generate
from memaudit.models.hf import LoadOptions, load_causal_lm
from memaudit.models.sources import FILES, Sources
from memaudit.scoring.cache import resolve_cache_root
from memaudit.scoring.engine import ScoreSettings, score_texts

from .compare import against_retrained, quantization_recovery
from .config import UnlearnEvalConfig
from .curve import prompt_length, token_stats
from .loop import pad_batch
from .quantize import quantized_lm
from .run import UNLEARN_RECORD


@dataclass
class EvalSets:
    forget: list[TextRecord]
    holdout: list[TextRecord]
    retain: list[str]
    general: list[str]
    skipped: list[Skipped] = field(default_factory=list)

    def texts(self) -> list[str]:
        return (
            [r.text for r in self.forget]
            + [r.text for r in self.holdout]
            + self.retain
            + self.general
        )

    def slices(self) -> dict[str, slice]:
        a, b, c = (
            len(self.forget),
            len(self.forget) + len(self.holdout),
            len(self.forget) + len(self.holdout) + len(self.retain),
        )
        return {
            "forget": slice(0, a),
            "holdout": slice(a, b),
            "retain": slice(b, c),
            "general": slice(c, c + len(self.general)),
        }


def run_unlearn_eval(
    config: UnlearnEvalConfig, *, progress=None, sources: Sources = FILES
) -> tuple[Path, dict]:
    """Evaluate every model and write results.json, scores.parquet and report.html.

    ``sources``: forget and holdout texts the API was given by name (models are dirs).
    """
    t0 = time.perf_counter()
    sets = load_sets(config, sources=sources)
    run = rs.RunDir.begin(config.out, "unlearn-eval", config)
    out = run.path
    models = {"original": config.original}
    for path in config.unlearned:
        models[_model_name(path, models)] = path
    if config.retrain:
        from .retrain import retrain_without

        models["retrained"] = str(
            retrain_without(config.original, [r.text for r in sets.forget], out, progress=progress)
        )
    elif config.retrained:
        models["retrained"] = config.retrained
    half_a, half_b = _halves(len(sets.forget), config.seed)
    per_model, described, rows, originals, forget_nll = {}, {}, [], None, {}
    for name, path in models.items():
        m = evaluate_model(
            path, sets, config, (half_a, half_b), baseline=originals, progress=progress
        )
        if name == "original":
            originals = m.per_text_nll
        per_model[name] = m.measures
        described[name] = m.described
        forget_nll[name] = m.per_text_nll[sets.slices()["forget"]]
        per_model[name]["kind"] = (
            "original"
            if name == "original"
            else "retrained"
            if name == "retrained"
            else "unlearned"
        )
        rows += [{"model": name, **r} for r in m.rows]
    quantization_flags(per_model)
    retrained_note = compare_with_retrained(per_model, forget_nll)
    calibration = calibrate(
        {n: p for n, p in models.items() if per_model[n]["kind"] == "unlearned"},
        sets,
        config,
        originals,
        per_model,
        progress,
    )
    results = {
        **run.header({}),
        "models": described,
        "data": {
            **{k: len(getattr(sets, k)) for k in ("forget", "holdout", "retain", "general")},
            "skipped": [s.to_dict() for s in sets.skipped],
        },
        "evaluation": per_model,
        "against_retrained": retrained_note,
        "quantization": {
            "bits": list(config.bit_widths()),
            "group_size": config.quant_group_size,
            "rule": "forgetting does not survive when the quantized model recovers at least half "
            "of the forget exact-extraction gap or of the forget NLL gap to the original",
        },
        "calibration": calibration,
        "timings_s": {
            "total": time.perf_counter() - t0,
            "quantization_attack": sum(
                q["seconds"] for d in described.values() for q in d.get("quantized", {}).values()
            ),
        },
    }
    run.write_scores({k: [r.get(k) for r in rows] for k in rows[0]})
    render = None
    if config.report:
        from memaudit.report import write_unlearn_report

        render = write_unlearn_report
    run.finish(results, render)
    return out, results


def load_sets(config: UnlearnEvalConfig, *, sources: Sources = FILES) -> EvalSets:
    forget = sources.read_texts(config.forget).records
    holdout = sources.read_texts(config.holdout).records
    if len(forget) < 2 or len(holdout) < 2:
        raise InputError(
            "forget and holdout need at least 2 texts each (the relearning attack splits the "
            "forget set)"
        )
    skip = config.skip_invalid
    retain = load_corpus(
        config.retain, max_chars=config.retain_chars, seed=config.seed, skip_invalid=skip
    )
    general = (
        load_corpus(config.general, seed=config.seed, skip_invalid=skip) if config.general else None
    )
    return EvalSets(
        forget,
        holdout,
        corpus_chunks(retain.docs, config.eval_texts, config.chunk_chars, what="the retain corpus"),
        corpus_chunks(
            general.docs, config.eval_texts, config.chunk_chars, what="the general corpus"
        )
        if general
        else [],
        retain.skipped + (general.skipped if general else []),
    )


@dataclass
class ModelEvaluation:
    """One model's evaluation: the measures results.json shows, and what the run needs besides."""

    measures: dict[str, Any]  # forget / mia / retain / general / passes (+ relearn): JSON-shaped
    per_text_nll: np.ndarray  # (texts,) mean token NLL of every text, the baseline of the deltas
    described: dict[str, Any]  # the model's description (path, fingerprint, size)
    rows: list[dict[str, Any]]  # one scores.parquet row per text


def evaluate_model(
    path: str,
    sets: EvalSets,
    config: UnlearnEvalConfig,
    halves,
    *,
    baseline=None,
    progress=None,
    full: bool = True,
) -> ModelEvaluation:
    """Every measure of one model; ``full=False`` (checkpoints) skips generation and relearning."""
    lm = load_causal_lm(path, LoadOptions(dtype="float32", device=config.device))
    # one pass per text: forget and holdout also lowercased (for the lowercase attack), retain and
    # general not
    texts, n_mia = sets.texts(), len(sets.forget) + len(sets.holdout)
    cache = resolve_cache_root(config.cache_dir, config.no_cache)
    inputs, stats = score_views(
        lm, None, texts[:n_mia], ScoreSettings(), lowercase=True, cache_root=cache
    )
    rest, rest_stats = score_texts(lm, texts[n_mia:], ScoreSettings(), cache_root=cache)
    sl = sets.slices()
    ids = lm.encode(
        [r.text for r in sets.forget]
    )  # once: prompts, generation and relearning all use them
    prompts = [
        prompt_length(lm.tokenizer, r, t, config.prefix_tokens) for r, t in zip(sets.forget, ids)
    ]
    forget_scores = [inputs.target.text(i) for i in range(sl["forget"].start, sl["forget"].stop)]
    exact_flags = _exact_flags(forget_scores, prompts, config.suffix_tokens)
    every = [*inputs.target, *rest]
    nll = np.array([-float(np.mean(t.logp)) for t in every])  # mean token NLL per text
    ntok = np.array([len(t.logp) for t in every])
    labels = np.r_[np.ones(len(sets.forget), int), np.zeros(len(sets.holdout), int)]
    attack_scores = {s.column: s(inputs) for s in parse_attacks(LAB_ATTACKS)}
    out: dict[str, Any] = {
        "path": str(path),
        "fingerprint": lm.fingerprint,
        "method": _method_of(path),
        "forget": {
            "exact": _rate(exact_flags),
            "nll": _mean_ci(nll[sl["forget"]], ntok[sl["forget"]], config),
        },
        "mia": {
            col: membership_metrics(v, labels, n_bootstrap=config.n_bootstrap, seed=config.seed)[
                "auc"
            ].to_dict()
            for col, v in attack_scores.items()
        },
        "retain": _nll_block(nll, ntok, sl["retain"], baseline, config),
        "general": _nll_block(nll, ntok, sl["general"], baseline, config) if sets.general else None,
        "passes": {"scoring": stats["target"].forward_passes + rest_stats.forward_passes},
    }
    if full:
        generated = greedy_generate(
            lm,
            [t[:k] for t, k in zip(ids, prompts)],
            config.suffix_tokens,
            progress=progress,
            stage=f"{Path(path).name}: extracting",
        )
        matches = [
            compare(g[: len(t[k : k + config.suffix_tokens])], t[k : k + config.suffix_tokens])
            for g, t, k in zip(generated, ids, prompts)
        ]
        out["forget"]["loose"] = _rate([m.loose for m in matches])
        out["forget"]["exact_generated"] = _rate(
            [m.exact for m in matches]
        )  # equals "exact": a cross-check
        out["passes"]["generation_prompts"] = len(generated)
        if config.relearn_steps:
            continuation_nll = [
                float(-np.mean(t.logp[k - 1 : k - 1 + config.suffix_tokens]))
                for t, k in zip(forget_scores, prompts)
            ]
            out["relearn"] = relearn_attack(
                lm, ids, prompts, halves, config, before=(exact_flags, continuation_nll)
            )
        if config.bit_widths():
            out["quantized"], quantized = quantization_attack(
                lm, sets, config, prompts, nll, cache=cache, progress=progress
            )
    described = lm.describe()
    if full and config.bit_widths():
        described["quantized"] = quantized
    rows = [
        {"set": s, "id": rec_id, "nll": float(nll[i])}
        for s, sl_ in sl.items()
        for i, rec_id in zip(range(sl_.start, sl_.stop), _ids(sets, s))
    ]
    return ModelEvaluation(measures=out, per_text_nll=nll, described=described, rows=rows)


def _exact_flags(forget_scores, prompts: list[int], suffix: int) -> list[bool]:
    """Per forget text: is every continuation token the argmax (so greedy decoding from the
    prompt reproduces it)?"""
    return [bool(t.is_argmax[k - 1 : k - 1 + suffix].all()) for t, k in zip(forget_scores, prompts)]


def quantization_attack(
    lm, sets: EvalSets, config: UnlearnEvalConfig, prompts: list[int], nll, *, cache, progress
) -> tuple[dict[str, dict], dict[str, dict]]:
    """The model re-measured after fake quantization to each bit width.

    Per width: forget exact extraction (argmax flags) and NLL, MIA forget vs holdout with the
    lab's attacks that need no second view (loss, zlib, min_k, min_k_pp: the lowercase attack
    would cost a second pass), retain NLL and its paired change from the model before
    quantization (``nll``: its per-text NLL). The general corpus is not scored. Each quantized copy
    has its own fingerprint, so its scores are cached apart and reused by a second run.

    Returns the measures (results.json's ``evaluation[model]["quantized"]``) and each copy's
    description (fingerprint and what was quantized).
    """
    texts, sl = sets.texts(), sets.slices()
    n_mia = sl["holdout"].stop
    specs = [s for s in parse_attacks(LAB_ATTACKS) if not s.attack.needs]
    labels = np.r_[np.ones(len(sets.forget), int), np.zeros(len(sets.holdout), int)]
    measures, described = {}, {}
    for bits in config.bit_widths():
        t0 = time.perf_counter()
        qlm = quantized_lm(lm, bits=bits, group_size=config.quant_group_size)
        inputs, stats = score_views(
            qlm, None, texts[:n_mia], ScoreSettings(), lowercase=False, cache_root=cache
        )
        retain, retain_stats = score_texts(
            qlm, texts[sl["retain"]], ScoreSettings(), cache_root=cache
        )
        forget_scores = [
            inputs.target.text(i) for i in range(sl["forget"].start, sl["forget"].stop)
        ]
        every = [*inputs.target, *retain]  # forget, holdout, retain: the slices' order
        q_nll = np.array([-float(np.mean(t.logp)) for t in every])
        ntok = np.array([len(t.logp) for t in every])
        measures[str(bits)] = {
            "bits": bits,
            "group_size": config.quant_group_size,
            "fingerprint": qlm.fingerprint,
            "forget": {
                "exact": _rate(_exact_flags(forget_scores, prompts, config.suffix_tokens)),
                "nll": _mean_ci(q_nll[sl["forget"]], ntok[sl["forget"]], config),
            },
            "mia": {
                s.column: membership_metrics(
                    s(inputs), labels, n_bootstrap=config.n_bootstrap, seed=config.seed
                )["auc"].to_dict()
                for s in specs
            },
            # the change is from this model unquantized: what quantization itself costs
            "retain": _nll_block(q_nll, ntok, sl["retain"], nll, config),
            "passes": {"scoring": stats["target"].forward_passes + retain_stats.forward_passes},
        }
        described[str(bits)] = {**qlm.quantization, "seconds": time.perf_counter() - t0}
        del qlm  # one quantized copy in memory at a time
    return measures, described


def quantization_flags(per_model: dict[str, dict]) -> None:
    """Add to each quantized block how much forgetting came back, and to each model
    ``forgetting_survives_quantization`` per bit width (None for the original, and where the model
    forgot nothing)."""
    original = per_model["original"]
    for name, m in per_model.items():
        if "quantized" not in m:
            continue
        for q in m["quantized"].values():
            q.update(
                quantization_recovery(m, q, original)
                if name != "original"
                else {"recovered": None, "survives": None}
            )
        m["forgetting_survives_quantization"] = {
            b: q["survives"] for b, q in m["quantized"].items()
        }


def compare_with_retrained(per_model: dict[str, dict], forget_nll: dict[str, np.ndarray]) -> dict:
    """Forget quality, PrivLeak and the over-/under-unlearning flags of every other model against
    the retrained one (``evaluation[model]["vs_retrained"]``); what results.json says when there
    is no retrained model."""
    if "retrained" not in per_model:
        return {
            "available": False,
            "note": "no retrained model (--retrained DIR or --retrain): forget quality, PrivLeak "
            "and the over-/under-unlearning flags are measured against one",
        }
    for name, m in per_model.items():
        if name != "retrained":
            m["vs_retrained"] = against_retrained(
                m, per_model["retrained"], forget_nll[name], forget_nll["retrained"]
            )
    return {
        "available": True,
        "forget_quality": "KS-test p-value, per-text mean NLL of the forget texts (TOFU's form)",
        "privleak": "(AUC_u - AUC_r) / AUC_r in MUSE's orientation (holdout the positive class), "
        "loss attack; a fraction (MUSE prints x100)",
        "flags": "over_unlearning: the loss AUC's bootstrap 95% CI wholly below the retrained "
        "AUC; under_unlearning: wholly above",
    }


def relearn_attack(
    lm, ids: list[list[int]], prompts: list[int], halves, config: UnlearnEvalConfig, *, before
) -> dict:
    """Fine-tune a copy on half A of the forget set; how much of half B comes back?

    ``before``: (exact flags, continuation NLLs) of every forget text under the model as it is,
    read off its scoring pass; half B's are compared with the same measures after relearning.
    """
    a, b = halves
    eos = (
        lm.tokenizer.convert_tokens_to_ids(EOS)
        if EOS in lm.tokenizer.get_vocab()
        else (lm.tokenizer.eos_token_id or 0)
    )
    model = copy.deepcopy(lm.model).float()
    before = ([before[0][i] for i in b], [before[1][i] for i in b])
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.relearn_lr, weight_decay=0.0)
    batch, mask = pad_batch([ids[i] + [eos] for i in a], eos, lm.device)
    labels = batch.masked_fill(mask == 0, -100)
    model.train()
    for _ in range(config.relearn_steps):
        model(input_ids=batch, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    after = _teacher_forced(
        model, [ids[i] for i in b], [prompts[i] for i in b], eos, config.suffix_tokens
    )
    return {
        "half_a": len(a),
        "half_b": len(b),
        "steps": config.relearn_steps,
        "exact_before": _rate(before[0]),
        "exact_after": _rate(after[0]),
        "nll_before": float(np.mean(before[1])),
        "nll_after": float(np.mean(after[1])),
        "nll_recovered": float(np.mean(before[1]) - np.mean(after[1])),
    }


@torch.no_grad()
def _teacher_forced(
    model, seqs, prompts, pad_id: int, suffix: int
) -> tuple[list[bool], list[float]]:
    """Per sequence: does greedy decoding from its prompt reproduce it (all continuation tokens
    argmax), and its continuation NLL.
    """
    exact, nll = [], []
    for (logp, is_max), k in zip(token_stats(model, seqs, pad_id, len(seqs)), prompts):
        span = slice(k - 1, k - 1 + suffix)
        exact.append(bool(is_max[span].all()))
        nll.append(float(-logp[span].mean()))
    return exact, nll


def calibrate(unlearned: dict[str, str], sets, config, originals, per_model, progress) -> dict:
    """Each method's checkpoints as a forget-vs-retain curve, and the point within the retain budget
    whose forget-vs-holdout AUC is closest to the retrained model's (an AUC far below it is
    over-forgetting, which is as visible to an attacker as remembering)."""
    # the AUC an unlearned model should have: the retrained model's, or chance without one
    target = per_model["retrained"]["mia"]["loss"]["value"] if "retrained" in per_model else 0.5
    out = {"retain_budget": config.retain_budget, "target_auc": target, "methods": {}}
    for name, path in unlearned.items():
        points = []
        for ckpt in sorted(Path(path).glob("step-*")):
            m = evaluate_model(
                str(ckpt), sets, config, None, baseline=originals, progress=progress, full=False
            )
            points.append(_point(m.measures, int(ckpt.name.split("-")[1])))
        final = (
            json.loads((Path(path) / UNLEARN_RECORD).read_text()).get("step")
            if (Path(path) / UNLEARN_RECORD).is_file()
            else None
        )
        points.append(_point(per_model[name], final))
        within = [p for p in points if p["retain_delta"] <= config.retain_budget]
        chosen = (
            min(within, key=lambda p: (abs(p["mia_auc"] - target), p["forget_exact"]))
            if within
            else None
        )
        out["methods"][name] = {"curve": points, "chosen": chosen}
    return out


def _point(m: dict, step) -> dict:
    return {
        "step": step,
        "retain_delta": m["retain"]["delta"]["value"] if m["retain"]["delta"] else 0.0,
        "forget_exact": m["forget"]["exact"]["value"],
        "forget_nll": m["forget"]["nll"]["value"],
        "mia_auc": m["mia"]["loss"]["value"],
    }


def _nll_block(nll, ntok, sl: slice, baseline, config) -> dict:
    block = {"nll": _mean_ci(nll[sl], ntok[sl], config), "delta": None}
    if baseline is not None:
        block["delta"] = _mean_ci(nll[sl] - baseline[sl], ntok[sl], config)
    return block


def _mean_ci(values: np.ndarray, weights: np.ndarray, config) -> dict:
    """Token-weighted mean with a bootstrap 95% CI over texts."""
    values, weights = np.asarray(values, float), np.asarray(weights, float)
    mean = float(np.average(values, weights=weights))
    rng = np.random.default_rng(config.seed)
    idx = rng.integers(0, len(values), (config.n_bootstrap, len(values)))
    boots = (values[idx] * weights[idx]).sum(1) / weights[idx].sum(1)
    return {
        "value": mean,
        "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
    }


def _rate(flags) -> dict:
    n, k = len(flags), int(sum(flags))
    return {"value": k / n if n else float("nan"), "ci": list(wilson_interval(k, n)), "n": n}


def _halves(n: int, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[: n // 2].tolist()), sorted(order[n // 2 :].tolist())


def _ids(sets: EvalSets, name: str) -> list[str]:
    if name in ("forget", "holdout"):
        return [r.id for r in getattr(sets, name)]
    return [f"{name}-{i}" for i in range(len(getattr(sets, name)))]


def _model_name(path: str, taken: dict) -> str:
    """The method's name (``npo-lora`` for LoRA adapters), else the dir's; ``-2``... if taken."""
    record = _record_of(path)
    name = record.get("method") or Path(path).name
    name = f"{name}-lora" if record.get("lora") else name
    base, k = name, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def _method_of(path: str) -> str | None:
    return _record_of(path).get("method")


def _record_of(path: str) -> dict:
    """The unlearn record of a model dir (empty for a model ``unlearn`` did not write)."""
    record = Path(path) / UNLEARN_RECORD
    return json.loads(record.read_text()) if record.is_file() else {}
