"""``memaudit mia``, ``dataset-inference``, ``attacks`` and ``traps make|inject|detect``:
proving training.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer
from rich.table import Table

from memaudit.mia.config import (
    DatasetInferenceConfig,
    MiaConfig,
    TrapDetectConfig,
    TrapInjectConfig,
    TrapMakeConfig,
)

from .common import (
    StageBars,
    config_command,
    console,
    out_console,
    reports_errors,
    say_skipped,
)

app = typer.Typer()
traps_app = typer.Typer(
    no_args_is_help=True, help="Copyright traps: make, inject into documents, detect in a model."
)


@config_command(app, "mia", MiaConfig)
def mia(cfg: MiaConfig) -> None:
    """Membership inference: how well does each attack tell members from non-members?

    Scores every text once per model (one forward pass per text window), runs every
    selected attack on those scores, and writes AUC and TPR at 1% / 0.1% FPR with
    bootstrap CIs to the run directory.
    """
    from memaudit.mia.run import run_mia

    with StageBars() as bars:
        outcome = run_mia(cfg, progress=bars)
    _print_mia_summary(outcome.results)
    say_skipped(outcome.results["data"]["skipped"], outcome.out_dir / "results.json")
    for w in outcome.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    out_console.print(f"results: {outcome.out_dir / 'results.json'}")
    if cfg.report:
        out_console.print(f"report:  {outcome.out_dir / 'report.html'}")


def _interval(e: dict) -> str:
    return f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"


def _tpr(e: dict) -> str:
    """A TPR@FPR value, or n/a where too few non-members make that FPR unreachable."""
    return f"{e['value']:.3f}" if e.get("supported", True) else "n/a"


def _print_mia_summary(results: dict) -> None:
    table = Table(title="Membership inference (higher score = member)")
    for col in ("attack", "AUC [95% CI]", "TPR@1%FPR", "TPR@0.1%FPR"):
        table.add_column(col, justify="left" if col == "attack" else "right")
    for name, m in sorted(results["metrics"].items(), key=lambda kv: -kv[1]["auc"]["value"]):
        table.add_row(
            name,
            _interval(m["auc"]),
            _tpr(m["tpr@1%fpr"]),
            _tpr(m["tpr@0.1%fpr"]),
        )
    out_console.print(table)
    if "by_duplication" in results:
        dup = Table(title="AUC by corpus occurrences of the member texts (vs all non-members)")
        attacks = list(results["metrics"])
        for col in ("occurrences", "members", *attacks):
            dup.add_column(col, justify="right")
        for b, g in results["by_duplication"].items():
            dup.add_row(
                b, str(g["members"]), *(f"{g['metrics'][a]['auc']['value']:.3f}" for a in attacks)
            )
        out_console.print(dup)
    for note in results["notes"]:
        console.print(f"[dim]note: {note}[/]", soft_wrap=True)


@config_command(app, "dataset-inference", DatasetInferenceConfig)
def dataset_inference(cfg: DatasetInferenceConfig) -> None:
    """Dataset inference (Maini et al. 2024): was this set of texts trained on? Answers with a
    p-value.

    Combines many membership features with a classifier fitted on half of each set and a
    one-sided Welch t-test on the other halves; needs at least 10 texts in each set.
    """
    from memaudit.mia.dataset_inference import run_dataset_inference

    with StageBars() as bars:
        results = run_dataset_inference(cfg, progress=bars)
    out_console.print(f"p-value {results['p_value']:.3g}: {results['verdict']}")
    say_skipped(results["data"]["skipped"], Path(cfg.out) / "results.json")
    check = results["false_positive_check"]
    if check:
        share = 100 * check["share_below_alpha"]
        out_console.print(
            f"false-positive check: {share:.0f}% of {len(check['p_values'])} runs had p < "
            f"{cfg.alpha:g}"
        )
    for w in results["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    out_console.print(f"results: {Path(cfg.out) / 'results.json'}")


@app.command("attacks")
@reports_errors
def list_attacks():
    """List the registered membership-inference attacks: what each needs, its parameters
    (set as name:param=value), and its cost in forward passes per text. Attacks marked
    "opt-in" are expensive: --attacks all leaves them out; name them to run them.
    """
    from memaudit.attacks import ATTACKS
    from memaudit.attacks.base import describe_requirement
    from memaudit.io.config import flag_of

    table = Table(title="Registered attacks (higher score = more likely member)")
    for col in ("name", "needs", "params", "cost", "in all", "description"):
        table.add_column(col, no_wrap=col == "name")
    for a in ATTACKS:
        params = ", ".join(f"{k}={v:g}" for k, v in a.defaults.items())
        flag = partial(flag_of, MiaConfig)
        needs = ", ".join(describe_requirement(r, flag) for r in a.requires())
        in_all = "opt-in" if a.opt_in else "yes"
        table.add_row(a.name, needs or "-", params or "-", a.cost, in_all, a.description)
    out_console.print(table)


@config_command(traps_app, "make", TrapMakeConfig)
def traps_make(cfg: TrapMakeConfig) -> None:
    """Sample trap sequences from a reference LM, bucket them by perplexity, keep distinct ones.

    Each bucket gets --per-bucket traps to inject and as many controls that are never injected.
    """
    from memaudit.lab.canaries import write_ledger
    from memaudit.mia.traps import make_traps
    from memaudit.models.hf import load_causal_lm

    with StageBars() as bars:
        made = make_traps(
            load_causal_lm(cfg.reference),
            lengths=cfg.lengths,
            per_bucket=cfg.per_bucket,
            recipe=cfg.generation(),
            pool_factor=cfg.pool_factor,
            seed=cfg.seed,
            progress=bars,
        )
    write_ledger(cfg.out, made)
    out_console.print(
        f"{sum(t.member for t in made)} traps + {sum(not t.member for t in made)} controls -> "
        f"{cfg.out}"
    )


@config_command(traps_app, "inject", TrapInjectConfig)
def traps_inject(cfg: TrapInjectConfig) -> None:
    """Put one trap per document, n copies at distinct line (or word) starts, and record every
    offset.

    Writes the corpus as JSONL (feed it to `memaudit train --corpus`) and the ledger with
    each copy's document and character offset next to it (<out>.ledger.jsonl).
    """
    from memaudit.io.corpus import load_corpus
    from memaudit.io.texts import write_texts
    from memaudit.lab.canaries import read_ledger, write_ledger
    from memaudit.mia.traps import inject_traps

    corpus = load_corpus(cfg.docs, max_chars=cfg.corpus_chars, seed=cfg.seed)
    documents = [(f"doc-{i:05d}", d) for i, d in enumerate(corpus.docs)]
    new_docs, traps = inject_traps(
        read_ledger(cfg.ledger),
        documents,
        repetitions=cfg.repetitions,
        recipe=cfg.recipe,
        seed=cfg.seed,
    )
    write_texts(cfg.out, new_docs)
    ledger_out = write_ledger(Path(cfg.out).with_suffix(".ledger.jsonl"), traps)
    out_console.print(
        f"{len(new_docs)} documents -> {cfg.out}; ledger with offsets -> {ledger_out}"
    )


@config_command(traps_app, "detect", TrapDetectConfig)
def traps_detect(cfg: TrapDetectConfig) -> None:
    """Detect injected traps: AUC of traps vs controls per length x repetitions x perplexity bucket.

    With --docs and --context-chars, traps are also scored after the document text that
    precedes them (controls after the same text as their paired trap).
    """
    from memaudit.mia.traps import run_traps_detect

    with StageBars() as bars:
        results = run_traps_detect(cfg, progress=bars)
    table = Table(title="Trap detection, buckets pooled (AUC)")
    for col in ("length", "repetitions", *results["attacks"]):
        table.add_column(col, justify="right")
    for c in results["pooled_grid"]:
        table.add_row(
            str(c["length"]),
            str(c["repetitions"]),
            *(f"{c[a]['value']:.2f}" for a in results["attacks"]),
        )
    out_console.print(table)
    out_console.print(f"results: {Path(cfg.out) / 'results.json'}")
    if cfg.report:
        out_console.print(f"report:  {Path(cfg.out) / 'report.html'}")
