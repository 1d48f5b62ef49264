"""``memaudit lab sweep``: Hubble's experiments, small. The same canaries and benchmark items at
the same copy counts, trained into models that differ in one thing each:

- **dilution** (cells ``x<d>-uniform``): the corpus is ``d`` times ``--base-chars`` and training
  ``d`` times ``--base-steps`` (the same number of passes over it), so each canary's copies are
  a ``d`` times smaller share of the tokens trained on (Hubble: memorization is set by frequency
  relative to corpus size);
- **phase** (cells ``x<d>-early|middle|late``): every insertion falls in the first, middle or
  last third of training (Hubble: data inserted early is forgotten without continued exposure);
- **benchmark contamination**: in every cell, generated QA items (``lab.qa``) are inserted at
  each of ``--copies`` (0: clean items, never inserted), and answered by greedy decoding.

Every cell is a ``memaudit train`` run (``lab.train.run_train``: one tokenizer for all cells,
trained once on the dilution-1 corpus) into ``cells/<label>-<hash>/model/``, whose ledger holds
every insertion's step; its evaluation (``eval-<hash>.json``, written last) holds one row per
canary, twin and item. A rerun trains no cell whose model is finished and evaluates no cell
whose evaluation is there; a killed cell resumes from its last checkpoint.

Every input is checked before the run dir is written: the corpus is large enough for the
largest dilution, and every cell's insertion plan fits its part of training.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.atomic import write_text_atomic
from memaudit.io.corpus import load_corpus, stdlib_snippets_upto
from memaudit.io.progress import Progress
from memaudit.io.texts import write_texts
from memaudit.metrics import roc_auc, wilson_interval

from .canaries import QA, Canary, make_canaries, read_ledger, write_ledger
from .config import LabSweepConfig
from .qa import make_items, write_benchmark

BENCHMARK = (
    "benchmark.jsonl"  # the inserted and clean items, as `memaudit contamination` reads them
)
TOKENIZER = "tokenizer"
ITEM_NGRAM = 16  # bytes: the items are ~45 bytes, shorter than the 50 of a byte index's default
TRAINING_TEXTS = "training.jsonl"  # corpus + every inserted text once: what `index/` indexes
CORPUS = (
    "corpus.jsonl"  # the non-canary documents; a cell of dilution d trains on its first d x base
)
SNIPPET_CHARS = 1000
EVAL_BOS = "always"  # every text evaluated after the document break training put before it


@dataclass(frozen=True)
class Cell:
    dilution: int
    phase: str  # a position policy: uniform, early, middle, late

    @property
    def label(self) -> str:
        return f"x{self.dilution}-{self.phase}"


def sweep_cells(config: LabSweepConfig) -> list[Cell]:
    """The dilution cells (uniform insertion), then the phase cells (at ``--phase-dilution``);
    a cell both axes name is trained once.
    """
    cells = [Cell(d, "uniform") for d in config.dilutions]
    cells += [Cell(config.phase_dilution, p) for p in config.phases]
    return list(dict.fromkeys(cells))


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def recipe(config: LabSweepConfig) -> dict[str, Any]:
    """Everything but the cell that decides a cell's model."""
    keys = (
        "corpus",
        "repetitions",
        "per_level",
        "copies",
        "items_per_level",
        "model_size",
        "base_steps",
        "base_chars",
        "batch_size",
        "seq_len",
        "lr",
        "warmup",
        "vocab_size",
        "seed",
    )
    return {k: getattr(config, k) for k in keys}


def eval_settings(config: LabSweepConfig) -> dict[str, Any]:
    return {
        "n_candidates": config.n_candidates,
        "seed": config.seed,
        "n_bootstrap": 200,
        "bos": EVAL_BOS,
    }


def cell_dir(out: Path, cell: Cell, config: LabSweepConfig) -> Path:
    return out / "cells" / f"{cell.label}-{digest([asdict(cell), recipe(config)])}"


def inserted(config: LabSweepConfig) -> list[Canary]:
    """Canaries (members and twins) and benchmark items, in ledger order, policy uniform."""
    canaries = make_canaries(
        repetitions=config.repetitions, per_level=config.per_level, seed=config.seed
    )
    return canaries + make_items(
        copies=config.copies, per_level=config.items_per_level, seed=config.seed
    )


def with_policy(entries: list[Canary], phase: str) -> list[Canary]:
    from dataclasses import replace

    return [replace(c, policy=phase) for c in entries]


@dataclass
class Prepared:
    """What the checks made, handed to the run: cells, ledger entries, the shared tokenizer."""

    config: LabSweepConfig
    cells: list[Cell]
    entries: list[Canary]
    tokenizer: Any
    tokenizer_cached: bool
    docs: list[str]  # the corpus of the largest dilution, written to CORPUS


def prepare(config: LabSweepConfig) -> Prepared:
    """Every check, before the run dir is written: the corpus holds the largest dilution, the
    tokenizer encodes every entry cleanly, and every cell's insertion plan fits its phase.
    """
    from .insertion import canary_tokens, plan_insertions
    from .lm import EOS, train_bpe_tokenizer

    cells = sweep_cells(config)
    largest = config.base_chars * max(c.dilution for c in cells)
    docs = corpus_docs(config, largest)
    held = sum(map(len, docs))
    if held < largest:
        raise InputError(
            f"the corpus holds {held:,} characters; --base-chars {config.base_chars:,} x "
            f"dilution {largest // config.base_chars} needs {largest:,}",
            path=config.corpus,
        )
    entries = inserted(config)
    tok_dir = tokenizer_dir(Path(config.out), config)
    cached = (tok_dir / "tokenizer.json").is_file()
    if cached:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    else:
        tokenizer = train_bpe_tokenizer(
            first_chars(docs, config.base_chars), vocab_size=config.vocab_size
        )
    eos_id = cast(int, tokenizer.convert_tokens_to_ids(EOS))  # one token name: one id
    tokens = canary_tokens(tokenizer, [c for c in entries if c.member], eos_id)
    for cell in cells:
        try:
            plan_insertions(
                with_policy(entries, cell.phase),
                tokens,
                steps=config.base_steps * cell.dilution,
                batch_size=config.batch_size,
                seq_len=config.seq_len,
                seed=config.seed,
            )
        except InputError as e:
            raise InputError(f"cell {cell.label}: {e.args[0]}") from None
    return Prepared(config, cells, entries, tokenizer, cached, docs)


def corpus_docs(config: LabSweepConfig, chars: int) -> list[str]:
    """The non-canary documents of the largest dilution; every cell trains on a prefix of them.

    ``stdlib`` is cut into shuffled snippets of about ``SNIPPET_CHARS`` (its files are long and
    the trainer reads its stream in order: whole files would give batches of one file each).
    """
    if config.corpus == "stdlib":
        return stdlib_snippets_upto(chars, chars=SNIPPET_CHARS, seed=config.seed)
    return load_corpus(config.corpus, max_chars=chars, seed=config.seed).docs


def first_chars(docs: list[str], chars: int) -> list[str]:
    """The documents up to ``chars`` characters, the last one cut (as ``load_corpus`` cuts)."""
    out, total = [], 0
    for d in docs:
        if total + len(d) >= chars:
            out.append(d[: chars - total])
            break
        out.append(d)
        total += len(d)
    return out


def tokenizer_dir(out: Path, config: LabSweepConfig) -> Path:
    key = digest([config.corpus, config.base_chars, config.vocab_size, config.seed])
    return out / "cells" / f"{TOKENIZER}-{key}"


def save_tokenizer(tokenizer, where: Path) -> None:
    """Saved into a temp dir and renamed, so a tokenizer dir is whole or absent."""
    import shutil

    tmp = where.with_name(f".{where.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    tmp.replace(where)


def run_lab_sweep(
    config: LabSweepConfig, *, progress: Progress | None = None
) -> tuple[Path, dict[str, Any]]:
    """The sweep's run dir: results.json (every cell and the findings), scores.parquet (one row
    per cell x canary/twin/item), benchmark.jsonl, report.html.
    """
    t0 = time.perf_counter()
    config = config.resolved()
    prepared = prepare(config)
    run = rs.RunDir.begin(config.out, "lab sweep", config)
    tok_dir = tokenizer_dir(run.path, config)
    if not prepared.tokenizer_cached:
        tok_dir.parent.mkdir(parents=True, exist_ok=True)
        save_tokenizer(prepared.tokenizer, tok_dir)
    write_texts(run.path / CORPUS, ((f"d{i:06d}", d) for i, d in enumerate(prepared.docs)))
    items = [c for c in prepared.entries if c.template == QA]
    write_benchmark(run.path / BENCHMARK, items)
    cells = []
    for k, cell in enumerate(prepared.cells):
        cells.append(run_cell(cell, config, prepared.entries, run.path, tok_dir, progress))
        if progress is not None:
            progress("cells", k + 1, len(prepared.cells), cells[-1]["label"])
    rows = score_columns(cells)
    run.write_scores(rows)
    results = {
        **run.header(),
        "recipe": {**recipe(config), "eval": eval_settings(config), "tokenizer": str(tok_dir)},
        "cells": [{k: v for k, v in c.items() if k != "rows"} for c in cells],
        "trained_cells": sum(c["trained"] for c in cells),
        "findings": findings(cells, config),
        "contamination": contamination_of_inserted(
            run.path, prepared.docs, prepared.entries, cells
        ),
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report.lab_sweep import write_lab_sweep_report

        render = write_lab_sweep_report
    run.finish(results, render)
    return run.path, results


def contamination_of_inserted(
    out: Path, docs: list[str], entries: list[Canary], cells: list[dict]
) -> dict[str, Any]:
    """``memaudit contamination``'s finding on the sweep's own training data: a byte index of
    the corpus (the largest dilution's documents) plus every text a ledger inserted (canaries
    and benchmark items, once each), searched for every benchmark item; compared with the
    items the ledgers inserted (``expected``). Written under ``OUT/index``.
    """
    from memaudit.index.build import build_index
    from memaudit.index.config import CONTAMINATION_THRESHOLD, IndexBuildConfig
    from memaudit.index.contamination import find_contaminated

    expected = sorted(
        {r["id"] for c in cells for r in c["rows"] if r["kind"] == "item" and r["copies"]}
    )
    inserted = [e for e in entries if e.member and e.repetitions > 0]
    training = out / TRAINING_TEXTS
    write_texts(
        training,
        [*((f"d{i:06d}", d) for i, d in enumerate(docs)), *((e.id, e.text) for e in inserted)],
    )
    index = build_index(
        IndexBuildConfig(corpus=str(training), tokenizer="bytes", out=str(out / "index"),
                         overwrite=True)
    )  # fmt: skip
    items = [{"id": e.id, "text": e.text} for e in entries if e.template == QA]
    found = find_contaminated(index, items, ngram=ITEM_NGRAM)
    flagged = sorted(f.id for f in found if f.contaminated)
    return {
        "status": "run",
        "index": str(out / "index"),
        "threshold": CONTAMINATION_THRESHOLD,
        "ngram_bytes": ITEM_NGRAM,
        "items": len(items),
        "expected_contaminated": expected,
        "found": flagged,
        "inserted_found": len(set(flagged) & set(expected)),
        "clean_found": len(set(flagged) - set(expected)),
        "exact": flagged == expected,
    }


def run_cell(
    cell: Cell,
    config: LabSweepConfig,
    entries: list[Canary],
    out: Path,
    tok_dir: Path,
    progress: Progress | None,
) -> dict[str, Any]:
    """Train (unless finished) and evaluate (unless evaluated) one cell; its result with
    ``trained``: whether this call trained it.
    """
    from .train import TRAIN_RECORD, run_train, stored_identity

    where = cell_dir(out, cell, config)
    result_file = where / f"eval-{digest(eval_settings(config))}.json"
    if result_file.is_file():
        return {**json.loads(result_file.read_text()), "trained": False}
    where.mkdir(parents=True, exist_ok=True)
    ledger = write_ledger(where / "ledger.jsonl", with_policy(entries, cell.phase))
    train = config.train_config(
        out=str(where / "model"),
        steps=config.base_steps * cell.dilution,
        corpus_chars=config.base_chars * cell.dilution,
        corpus=str(out / CORPUS),
        ledger=str(ledger),
        tokenizer=str(tok_dir),
        overwrite=True,  # the sweep owns its cell dirs
    )
    model_dir = where / "model"
    before = stored_identity(model_dir) if (model_dir / TRAIN_RECORD).is_file() else None
    run_train(train, progress=progress)
    record = json.loads((model_dir / TRAIN_RECORD).read_text())
    result = {
        "label": cell.label,
        "dilution": cell.dilution,
        "phase": cell.phase,
        "dir": str(where),
        "steps": train.steps,
        "tokens_trained": record["tokens_trained"],
        "corpus": {k: record["corpus"][k] for k in ("documents", "characters", "tokens", "digest")},
        "insertions": record["insertions"],
        "final_loss": record["final_loss"],
        "identity": record["identity"],
        **evaluate_cell(model_dir, config, record["tokens_trained"], cell, progress),
    }
    write_text_atomic(result_file, json.dumps(rs.jsonable(result), indent=2) + "\n")
    return {**result, "trained": before != record["identity"]}


def evaluate_cell(
    model_dir: Path,
    config: LabSweepConfig,
    tokens_trained: int,
    cell: Cell,
    progress: Progress | None,
) -> dict[str, Any]:
    """Canaries: extraction, exposure, the loss attack members vs twins (``evaluate_canaries``);
    items: greedy answer exact match and loss. One row per entry, and the summaries.
    """
    from memaudit.models.hf import LoadOptions, load_causal_lm

    from .evaluate import evaluate_canaries

    # training wrote a document break before every insertion (lab.insertion.canary_tokens);
    # prompts and scored texts get it too, or greedy decoding starts out of context
    model = load_causal_lm(model_dir, LoadOptions(bos=EVAL_BOS))
    ledger = read_ledger(model_dir / "ledger.jsonl")
    canaries = [c for c in ledger if c.template != QA]
    items = [c for c in ledger if c.template == QA]
    ev = evaluate_canaries(
        model,
        canaries,
        n_candidates=config.n_candidates,
        cache_root=model_dir.parent / "cache",
        seed=config.seed,
        n_bootstrap=eval_settings(config)["n_bootstrap"],
        progress=progress,
    )
    per_million = 1e6 / tokens_trained
    rows = [
        {
            **_entry_row(r.canary, cell, per_million),
            "exact": r.exact,
            "secret_found": r.secret_found,
            "token_match": r.token_match,
            "loss": r.loss,
            "exposure": r.exposure,
            "generated": r.generated,
        }
        for r in ev.canaries
    ]
    rows += _answer_items(model, items, cell, per_million, model_dir.parent / "cache", progress)
    return {
        "rows": rows,
        "canaries": _canary_summary(ev.summary, per_million),
        "mia_loss_auc": ev.summary["mia"]["loss"]["auc"],
        "items": _item_summary([r for r in rows if r["kind"] == "item"]),
    }


def _entry_row(c: Canary, cell: Cell, per_million: float) -> dict[str, Any]:
    steps = [i["step"] for i in c.insertions]
    kind = "item" if c.template == QA else ("canary" if c.member else "twin")
    return {
        "cell": cell.label,
        "dilution": cell.dilution,
        "phase": cell.phase,
        "kind": kind,
        "id": c.id,
        "pair_id": c.pair_id,
        "template": c.template,
        "level": c.level,
        "copies": c.repetitions,
        "member": c.member,
        "relative_frequency": c.level * per_million,  # copies per million tokens trained
        "insertions": len(c.insertions),
        "first_step": min(steps) if steps else None,
        "last_step": max(steps) if steps else None,
    }


def _answer_items(
    model, items: list[Canary], cell: Cell, per_million: float, cache_root: Path, progress
) -> list[dict[str, Any]]:
    """Each item's question greedily answered: exact when every answer token comes back."""
    from memaudit.attacks import parse_attacks
    from memaudit.attacks.views import score_views
    from memaudit.models.generation import greedy_generate
    from memaudit.scoring.engine import ScoreSettings

    from .evaluate import prompt_split
    from .verbatim import compare

    if not items:
        return []
    splits = [prompt_split(model, i) for i in items]
    longest = max(len(rest) for _, rest in splits)
    generated = greedy_generate(
        model, [p for p, _ in splits], longest, progress=progress, stage="answering items"
    )
    inputs, _ = score_views(
        model,
        None,
        [i.text for i in items],
        ScoreSettings(),
        lowercase=False,
        cache_root=cache_root,
    )
    loss = parse_attacks("loss")[0](inputs)
    rows = []
    for i, item in enumerate(items):
        rest = splits[i][1]
        match = compare(generated[i][: len(rest)], rest)
        rows.append(
            {
                **_entry_row(item, cell, per_million),
                "exact": match.exact,
                "secret_found": None,
                "token_match": match.token_match,
                "loss": float(loss[i]),
                "exposure": None,
                "generated": model.tokenizer.decode(generated[i][: len(rest)]),
            }
        )
    return rows


def _canary_summary(summary: dict, per_million: float) -> dict[str, dict]:
    """Per copy count: members' extraction and exposure, the loss attack's AUC vs their twins."""
    return {
        str(level): {
            "copies": int(level),
            "relative_frequency": int(level) * per_million,
            "exact": r["exact"],
            "secret_found": r["secret_found"],
            "recognition": r["recognition"],
            "exposure": r["exposure"],
            "twins_exposure": r["twins_exposure"],
            "auc_loss": r["auc"]["loss"],
        }
        for level, r in summary["by_level"].items()
    }


def _item_summary(rows: list[dict]) -> dict[str, dict]:
    """Per copy count: accuracy (greedy exact match) with its Wilson interval; for inserted
    counts, the loss attack's AUC against the clean items.
    """
    clean = [r["loss"] for r in rows if r["copies"] == 0]
    out = {}
    for copies in sorted({r["copies"] for r in rows}):
        sel = [r for r in rows if r["copies"] == copies]
        hits = sum(r["exact"] for r in sel)
        auc = None
        if copies and clean:
            scores = np.array([r["loss"] for r in sel] + clean)
            labels = np.array([1] * len(sel) + [0] * len(clean))
            auc = roc_auc(scores, labels)
        out[str(copies)] = {
            "copies": copies,
            "n": len(sel),
            "accuracy": hits / len(sel),
            "ci": list(wilson_interval(hits, len(sel))),
            "auc_loss_vs_clean": auc,
        }
    return out


def memorization(cell: dict) -> dict[str, float]:
    """A cell's memorization of its canaries, averaged over copy counts: extraction (exact),
    the loss attack's AUC vs twins, exposure.
    """
    levels = list(cell["canaries"].values())
    return {
        k: float(np.mean([r[m] for r in levels]))
        for k, m in (("exact", "exact"), ("auc_loss", "auc_loss"), ("exposure", "exposure"))
    }


def fell(high: dict[str, float], low: dict[str, float]) -> bool:
    """Whether memorization fell from ``high`` to ``low``: the loss attack's AUC and exposure
    both lower, and extraction not higher (at this size it is often 0 in both).
    """
    return (
        low["auc_loss"] < high["auc_loss"]
        and low["exposure"] < high["exposure"]
        and low["exact"] <= high["exact"]
    )


def findings(cells: list[dict], config: LabSweepConfig) -> dict[str, Any]:
    """Hubble's findings as measured here: each a comparison of the cells' numbers and whether
    it came out the way Hubble reports (``holds``), never assumed.
    """
    uniform = sorted((c for c in cells if c["phase"] == "uniform"), key=lambda c: c["dilution"])
    out: dict[str, Any] = {}
    if len(uniform) > 1:
        mem = {c["dilution"]: memorization(c) for c in uniform}
        lo, hi = uniform[0]["dilution"], uniform[-1]["dilution"]
        out["dilution"] = {
            "by_dilution": mem,
            "holds": fell(mem[lo], mem[hi]),
            "claim": f"memorization at dilution {hi} is below dilution {lo} (loss AUC and "
            "exposure lower, extraction not higher)",
        }
    phased = {c["phase"]: memorization(c) for c in cells if c["dilution"] == config.phase_dilution}
    if "early" in phased and "late" in phased:
        out["phase"] = {
            "by_phase": phased,
            "holds": fell(phased["late"], phased["early"]),
            "claim": "memorization of early insertions is below late ones (loss AUC and "
            "exposure lower, extraction not higher)",
        }
    acc = {c["label"]: {k: v["accuracy"] for k, v in c["items"].items()} for c in cells}
    auc = {
        c["label"]: {k: v["auc_loss_vs_clean"] for k, v in c["items"].items() if k != "0"}
        for c in cells
    }
    copies = sorted(int(k) for k in cells[0]["items"])
    top = str(copies[-1])
    mean_at = {str(k): float(np.mean([a[str(k)] for a in acc.values()])) for k in copies}
    clean = [a["0"] for a in acc.values()] if "0" in mean_at else []
    # the phase cells are left out of the rise: forgetting early insertions is their finding
    spread = [acc[c["label"]] for c in uniform]
    out["benchmark"] = {
        "accuracy_by_cell": acc,
        "loss_auc_vs_clean_by_cell": auc,
        "mean_accuracy_by_copies": mean_at,
        "clean_accuracy_range": [min(clean), max(clean)] if clean else None,
        "holds": bool(clean)
        and bool(spread)
        and all(a[top] > a["0"] for a in spread)
        and max(clean) - min(clean) <= 1 / config.items_per_level,
        "claim": f"items at {top} copies are answered more often than clean items in every "
        "cell of uniform insertion, and clean items stay within one item across all cells",
    }
    return out


def score_columns(cells: list[dict]) -> dict[str, list]:
    rows = [r for c in cells for r in c["rows"]]
    return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
