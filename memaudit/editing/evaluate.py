"""``memaudit edit-eval``: did the edit take, does it generalise, what else moved, and is the new
fact now *memorized* in memaudit's sense?

For every edited model, against the original (CounterFact's measures, with an NLL in place of
a probability: the mean NLL per target token, lower = more likely):

- **efficacy**: the new target beats the old one after the edit's own prompt (needs
  ``target_true``); **paraphrase**: the same after each paraphrase;
- **specificity**: each neighbourhood prompt still continues greedily with what the original
  gave (as many tokens as the new target), and that answer's NLL change;
- **fluency**: the mean NLL change per text on general text (``--general``);
- **extraction**: greedy decoding after the prompt gives the new target exactly (verbatim
  memorization, as ``memaudit extract`` counts it);
- **membership**: the loss attack's AUC separating the edited statements (prompt + new
  target) from statements of edits that were never applied (``--controls``), on the edited
  model and, for reference, on the original.

Proportions carry a Wilson 95% interval; NLL changes a bootstrap one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.corpus import corpus_chunks, load_corpus, stdlib_snippets
from memaudit.metrics import cluster_bootstrap_mean, roc_auc, wilson_interval
from memaudit.models.generation import greedy_generate
from memaudit.models.hf import LoadOptions, load_causal_lm

from .compute import target_nll
from .config import EditEvalConfig
from .requests import EditRequest, Encoded, encode, read_edits
from .run import EDIT_RECORD

BATCH = 32


@torch.no_grad()
def nlls(model, encoded: Sequence[Encoded]) -> np.ndarray:
    """Mean NLL per target token of each encoded (prompt, target), in batches."""
    out = [target_nll(model, encoded[s : s + BATCH]) for s in range(0, len(encoded), BATCH)]
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def proportion(flags: Sequence[bool]) -> dict:
    k, n = int(sum(flags)), len(flags)
    low, high = wilson_interval(k, n)
    return {"value": k / n if n else None, "ci_low": low, "ci_high": high, "n": n}


def mean_change(diffs: np.ndarray, *, n_bootstrap: int, seed: int) -> dict:
    e = cluster_bootstrap_mean(diffs, np.arange(len(diffs)), n_bootstrap=n_bootstrap, seed=seed)
    return {**e.to_dict(), "n": len(diffs)}


@dataclass(frozen=True)
class Probe:
    """One edit's token layouts (tokenized once, shared by every model)."""

    request: EditRequest
    new: Encoded
    true: Encoded | None
    paraphrases: list[tuple[Encoded, Encoded | None]]  # (new, true) after each paraphrase
    neighbours: list[list[int]]  # neighbourhood prompts' ids


def probes_of(tokenizer, edits: list[EditRequest], path: str) -> list[Probe]:
    out = []
    for e in edits:
        try:
            para: list[tuple[Encoded, Encoded | None]] = [
                (
                    encode(tokenizer, p, e.target_new),
                    encode(tokenizer, p, e.target_true) if e.target_true else None,
                )
                for p in e.paraphrases
            ]
            out.append(
                Probe(
                    e,
                    encode(tokenizer, e.prompt, e.target_new, e.subject),
                    encode(tokenizer, e.prompt, e.target_true, e.subject)
                    if e.target_true
                    else None,
                    para,
                    [tokenizer(p)["input_ids"] for p in e.neighbourhood],
                )
            )
        except InputError as err:
            raise InputError(f"edit '{e.id}': {err.reason}", path=path, line=e.line) from None
    return out


def target_len(p: Probe) -> int:
    return len(p.new.ids) - p.new.target_start


def measure_model(lm, probes: list[Probe], neighbour_answers: list[list[list[int]]]) -> list[dict]:
    """One row per edit: the NLLs and flags of the module docstring (specificity against
    ``neighbour_answers``, the original's greedy continuations)."""
    model = lm.model
    new = nlls(model, [p.new for p in probes])
    true = nlls(model, [p.true for p in probes if p.true is not None])
    greedy = greedy_generate(
        lm, [p.new.ids[: p.new.target_start] for p in probes], max(map(target_len, probes))
    )
    rows, t = [], 0
    for i, p in enumerate(probes):
        target = p.new.ids[p.new.target_start :]
        row: dict = {
            "id": p.request.id,
            "new_nll": float(new[i]),
            "true_nll": None,
            "efficacy": None,
            "extracted": greedy[i][: len(target)] == target,
        }
        if p.true is not None:
            row["true_nll"], row["efficacy"] = float(true[t]), bool(new[i] < true[t])
            t += 1
        para = [(nlls(model, [a])[0], nlls(model, [b])[0] if b else None) for a, b in p.paraphrases]
        row["paraphrase"] = (
            float(np.mean([a < b for a, b in para if b is not None]))
            if any(b is not None for _, b in para)
            else None
        )
        row["neighbour_nll"] = [
            float(nlls(model, [Encoded(q + ans, len(q) - 1, len(q))])[0])
            for q, ans in zip(p.neighbours, neighbour_answers[i])
        ]
        answers = greedy_generate(lm, p.neighbours, target_len(p)) if p.neighbours else []
        row["neighbour_kept"] = [a == b for a, b in zip(answers, neighbour_answers[i])]
        rows.append(row)
    return rows


def statement_nll(model, tokenizer, edits: list[EditRequest]) -> np.ndarray:
    """Mean NLL of each whole statement (prompt + new target), the loss attack's input."""
    encoded = []
    for e in edits:
        ids = tokenizer(e.prompt + e.target_new)["input_ids"]
        encoded.append(Encoded(ids, 0, 1))
    return nlls(model, encoded)


def general_nll(lm, texts: list[str]) -> np.ndarray:
    """Mean NLL per token of each text (cut to the model's context)."""
    ids = [t[: lm.max_length] for t in lm.tokenizer(texts)["input_ids"]]
    return nlls(lm.model, [Encoded(t, 0, 1) for t in ids if len(t) > 1])


def general_texts(spec: str, n: int, *, seed: int) -> list[str]:
    """``n`` texts of about 400 characters: stdlib snippets, or pieces cut from ``spec``'s
    documents at line ends."""
    if spec == "stdlib":
        return stdlib_snippets(n, chars=400, seed=seed)
    return corpus_chunks(load_corpus(spec, seed=seed).docs, n, 400, what="--general")


def edit_record(path: str, original_fingerprint: str, edits: str) -> dict | None:
    """The edited dir's ``memaudit_edit.json``, checked against ``--original`` and ``--edits``
    (a dir edited from another model or with other edits is refused); None for a dir memaudit
    did not edit (results.json says so)."""
    file = Path(path) / EDIT_RECORD
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
        made_from = record["original"]["fingerprint"]
        edits_sha = record["edits"]["sha256"]
    except (ValueError, KeyError, TypeError):
        raise InputError("is not a readable edit record", path=str(file)) from None
    if made_from != original_fingerprint:
        raise InputError(
            f"was edited from model {made_from[:12]}, not --original ({original_fingerprint[:12]})",
            path=path,
        )
    if edits_sha != hashlib.sha256(Path(edits).read_bytes()).hexdigest():
        raise InputError("was edited with another edits file than --edits", path=path)
    return {"method": record.get("config", {}).get("method"), "layers": record.get("layers")}


def summarise(
    rows: list[dict], base_rows: list[dict], fluency: np.ndarray, *, n_bootstrap: int, seed: int
) -> dict:
    """The measures of one edited model over ``rows`` (against the original's ``base_rows``)."""
    boot = {"n_bootstrap": n_bootstrap, "seed": seed}
    kept = [k for r in rows for k in r["neighbour_kept"]]
    moved = np.array(
        [
            a - b
            for r, o in zip(rows, base_rows)
            for a, b in zip(r["neighbour_nll"], o["neighbour_nll"])
        ]
    )
    return {
        "efficacy": proportion([r["efficacy"] for r in rows if r["efficacy"] is not None]),
        "paraphrase": proportion(
            [r["paraphrase"] >= 0.5 for r in rows if r["paraphrase"] is not None]
        ),
        "specificity": proportion(kept),
        "neighbour_nll_change": mean_change(moved, **boot) if len(moved) else None,
        "fluency_nll_change": mean_change(fluency, **boot),
        "extraction": proportion([r["extracted"] for r in rows]),
        "new_nll_change": mean_change(
            np.array([r["new_nll"] - o["new_nll"] for r, o in zip(rows, base_rows)]), **boot
        ),
    }  # fmt: skip


def membership(models, tokenizer, edits, controls) -> dict:
    """Loss-attack AUC of edited statements (members) vs control statements, per model."""
    labels = np.r_[np.ones(len(edits)), np.zeros(len(controls))]
    out = {}
    for name, lm in models.items():
        scores = -np.r_[
            statement_nll(lm.model, tokenizer, edits), statement_nll(lm.model, tokenizer, controls)
        ]
        out[name] = {"loss_auc": roc_auc(scores, labels)}
    return out


def run_edit_eval(config: EditEvalConfig, *, progress=None) -> tuple[Path, dict]:
    """Measure every ``--edited`` model against ``--original`` on ``--edits``."""
    t0 = time.perf_counter()
    if not config.edited:
        raise InputError("give at least one --edited model dir")
    edits = read_edits(config.edits)
    controls = read_edits(config.controls) if config.controls else []
    options = LoadOptions(dtype="float32", device=config.device)
    original = load_causal_lm(config.original, options)
    edited = {path: load_causal_lm(path, options) for path in config.edited}
    for path, lm in edited.items():
        if lm.tokenizer.get_vocab() != original.tokenizer.get_vocab():
            raise InputError("its vocabulary is not the original's", path=path)
    tokenizer = original.tokenizer
    probes = probes_of(tokenizer, edits, config.edits)
    texts = general_texts(config.general, config.general_texts, seed=config.seed)
    records = {path: edit_record(path, original.fingerprint, config.edits) for path in edited}
    run = rs.RunDir.begin(config.out, "edit-eval", config)
    neighbour_answers = [
        greedy_generate(original, p.neighbours, target_len(p)) if p.neighbours else []
        for p in probes
    ]
    base_rows = measure_model(original, probes, neighbour_answers)
    base_general = general_nll(original, texts)
    per_model, table = {}, []
    for i, (path, lm) in enumerate(edited.items()):
        rows = measure_model(lm, probes, neighbour_answers)
        fluency = general_nll(lm, texts) - base_general
        per_model[path] = summarise(
            rows, base_rows, fluency, n_bootstrap=config.n_bootstrap, seed=config.seed
        )
        table += [{"model": path, **r} for r in rows]
        if progress:
            progress("measuring edited models", i + 1, len(edited), path)
    scalar = ("model", "id", "new_nll", "true_nll", "efficacy", "paraphrase", "extracted")
    run.write_scores({k: [r[k] for r in table] for k in scalar})
    results = {
        **run.header({"original": original, **{f"edited:{p}": lm for p, lm in edited.items()}}),
        "data": {"edits": len(edits), "controls": len(controls), "general_texts": len(texts)},
        "edit_records": records,
        "original": {
            "extraction": proportion([r["extracted"] for r in base_rows]),
            "efficacy": proportion([r["efficacy"] for r in base_rows if r["efficacy"] is not None]),
        },
        "edited": per_model,
        "membership": (
            membership({"original": original, **edited}, tokenizer, edits, controls)
            if controls
            else None
        ),
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report.editing import write_edit_report

        render = write_edit_report
    run.finish(results, render)
    return run.path, results
