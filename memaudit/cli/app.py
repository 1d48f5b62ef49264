"""The ``memaudit`` command line: parse flags, build a config, call the library, show a table.

All work happens in the library; this module only turns results into terminal output and
errors into one-line messages with exit code 2.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from memaudit.errors import MemauditError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure, prove and remove training-data memorization in generative models.",
)
console = Console(stderr=True)
out_console = Console()

EXIT_BAD_INPUT = 2


def main() -> None:
    app()


def reports_errors(command):
    """Run a command with a quiet environment; a MemauditError becomes one line on stderr and exit 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _quiet_environment()
        try:
            return command(*args, **kwargs)
        except MemauditError as e:
            console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return wrapper


def _quiet_environment() -> None:
    """No network, and no third-party progress bars over ours."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class StageBars:
    """A rich progress bar per stage, fed by the library's (stage, done, total) callbacks."""

    def __init__(self):
        self.progress = Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None:
        if not self.tasks:  # shown from the first report on: a run that fails early prints nothing here
            self.progress.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, note=note)
        self.progress.update(self.tasks[stage], completed=done, total=total, note=note)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.tasks:
            self.progress.stop()


@app.command()
@reports_errors
def mia(
    model: Optional[str] = typer.Option(None, "--model", help="Target model: a local Hugging Face directory (safetensors)."),
    members: Optional[str] = typer.Option(None, "--members", help="Known members: .jsonl (a 'text' field), .txt (one per line), .parquet or a folder."),
    nonmembers: Optional[str] = typer.Option(None, "--nonmembers", help="Known non-members, same formats."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Reference model dir for the 'reference' attack (its tokenizer may differ)."),
    attacks: Optional[str] = typer.Option(None, "--attacks", help="'all' (default) or a comma list, e.g. 'loss,zlib,min_k:k=0.1'. See `memaudit attacks`."),
    index: Optional[str] = typer.Option(None, "--index", help="Corpus index (`memaudit index build`): add each text's corpus count and AUC per duplication bucket."),
    out: Optional[str] = typer.Option(None, "--out", help="Run directory for results.json, scores.parquet, report.html [default: runs/mia]."),
    config: Optional[str] = typer.Option(None, "--config", help="JSON or TOML file of settings; flags given here override it."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1, ..."),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code", help="Allow a model's own Python code to run (off by default)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Window length in tokens [default: the model's context]."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Sliding-window stride for long texts [default: half a window]."),
    batch_tokens: Optional[int] = typer.Option(None, "--batch-tokens", help="Padded tokens per forward batch [default: 8192]."),
    max_batch_size: Optional[int] = typer.Option(None, "--max-batch-size", help="Windows per forward batch at most [default: 64]."),
    shard_texts: Optional[int] = typer.Option(None, "--shard-texts", help="Texts per cache shard [default: 256]."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Score cache root [default: $MEMAUDIT_CACHE or ~/.cache/memaudit]."),
    no_cache: Optional[bool] = typer.Option(None, "--no-cache", help="Score everything afresh and keep nothing."),
    skip_invalid: Optional[bool] = typer.Option(None, "--skip-invalid", help="Skip invalid records (counted in results.json) instead of stopping."),
    n_bootstrap: Optional[int] = typer.Option(None, "--n-bootstrap", help="Bootstrap rounds for the 95%% CIs [default: 1000]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the bootstrap [default: 0]."),
    no_report: Optional[bool] = typer.Option(None, "--no-report", help="Skip report.html."),
):
    """Membership inference: how well does each attack tell members from non-members?

    Scores every text once per model (one forward pass per text window), runs every
    selected attack on those scores, and writes AUC and TPR at 1% / 0.1% FPR with
    bootstrap CIs to the run directory.
    """
    from memaudit.io.config import MiaConfig, resolve_config
    from memaudit.mia.run import run_mia

    cfg = resolve_config(
        MiaConfig,
        config_file=config,
        model=model,
        members=members,
        nonmembers=nonmembers,
        reference=reference,
        attacks=attacks,
        index=index,
        out=out,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        max_length=max_length,
        stride=stride,
        batch_tokens=batch_tokens,
        max_batch_size=max_batch_size,
        shard_texts=shard_texts,
        cache_dir=cache_dir,
        no_cache=no_cache,
        skip_invalid=skip_invalid,
        n_bootstrap=n_bootstrap,
        seed=seed,
        report=None if no_report is None else not no_report,
    )
    with StageBars() as bars:
        outcome = run_mia(cfg, progress=bars)
    _print_mia_summary(outcome.results)
    for w in outcome.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    out_console.print(f"results: {outcome.out_dir / 'results.json'}")
    if cfg.report:
        out_console.print(f"report:  {outcome.out_dir / 'report.html'}")


def _print_mia_summary(results: dict) -> None:
    table = Table(title="Membership inference (higher score = member)")
    for col in ("attack", "AUC [95% CI]", "TPR@1%FPR", "TPR@0.1%FPR"):
        table.add_column(col, justify="left" if col == "attack" else "right")
    fmt = lambda e: f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"  # noqa: E731
    for name, m in sorted(results["metrics"].items(), key=lambda kv: -kv[1]["auc"]["value"]):
        table.add_row(name, fmt(m["auc"]), f"{m['tpr@1%fpr']['value']:.3f}", f"{m['tpr@0.1%fpr']['value']:.3f}")
    out_console.print(table)
    if "by_duplication" in results:
        dup = Table(title="AUC by corpus occurrences of the member texts (vs all non-members)")
        attacks = list(results["metrics"])
        for col in ("occurrences", "members", *attacks):
            dup.add_column(col, justify="right")
        for b, g in results["by_duplication"].items():
            dup.add_row(b, str(g["members"]), *(f"{g['metrics'][a]['auc']['value']:.3f}" for a in attacks))
        out_console.print(dup)
    for note in results["notes"]:
        console.print(f"[dim]note: {note}[/]")


@app.command()
@reports_errors
def extract(
    model: Optional[str] = typer.Option(None, "--model", help="Model dir (local, safetensors)."),
    data: Optional[str] = typer.Option(None, "--data", help="Texts: .jsonl, .txt, .parquet or a folder."),
    prefix_tokens: Optional[int] = typer.Option(None, "--prefix-tokens", "-k", help="Prompt length K in tokens [default: 32]."),
    suffix_tokens: Optional[int] = typer.Option(None, "--suffix-tokens", "-m", help="Tokens M to generate and compare [default: 32]."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Metadata field to group rates by (e.g. repetitions)."),
    index: Optional[str] = typer.Option(None, "--index", help="Corpus index (`memaudit index build`): add each text's corpus count and rates per duplication bucket (1, 2-4, 5-16, 17-64, >64)."),
    out: Optional[str] = typer.Option(None, "--out", help="Run directory [default: runs/extract]."),
    config: Optional[str] = typer.Option(None, "--config", help="JSON or TOML file of settings; flags override it."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, ..."),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code", help="Allow a model's own code to run."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Prompts decoded together [default: 64]."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Score cache root."),
    no_cache: Optional[bool] = typer.Option(None, "--no-cache", help="Keep no scores on disk."),
    skip_invalid: Optional[bool] = typer.Option(None, "--skip-invalid", help="Skip invalid or too-short texts instead of stopping."),
    no_report: Optional[bool] = typer.Option(None, "--no-report", help="Skip report.html."),
):
    """Verbatim extraction: does greedy decoding from a text's first K tokens reproduce the next M?

    Reports exact, loose (token Levenshtein similarity >= 0.75) and token-match rates with
    95% Wilson intervals, overall and per --group-by value, and each text's extraction
    strength (1 - shortest reproducing prefix / length).
    """
    from memaudit.io.config import ExtractConfig, resolve_config
    from memaudit.lab.extract import run_extract

    cfg = resolve_config(
        ExtractConfig, config_file=config, model=model, data=data, prefix_tokens=prefix_tokens, suffix_tokens=suffix_tokens,
        group_by=group_by, index=index, out=out, dtype=dtype, device=device, trust_remote_code=trust_remote_code, batch_size=batch_size,
        cache_dir=cache_dir, no_cache=no_cache, skip_invalid=skip_invalid, report=None if no_report is None else not no_report,
    )
    with StageBars() as bars:
        outcome = run_extract(cfg, progress=bars)
    _print_rates_table(outcome.results["rates"], cfg.group_by)
    out_console.print(f"results: {outcome.out_dir / 'results.json'}")
    if cfg.report:
        out_console.print(f"report:  {outcome.out_dir / 'report.html'}")


def _print_rates_table(rates: dict, group_by: str | None) -> None:
    table = Table(title="Verbatim extraction")
    for col in ("group", "texts", "exact", "loose", "token match", "strength"):
        table.add_column(col, justify="left" if col == "group" else "right")
    rows = [("all", rates["overall"])] + [(f"{group_by}={g}", r) for g, r in rates.get("by_group", {}).items()]
    rows += [(f"corpus count {g}", r) for g, r in rates.get("by_duplication", {}).items()]
    for name, r in rows:
        table.add_row(
            name, str(r["n"]), f"{r['exact']['value']:.3f}", f"{r['loose']['value']:.3f}", f"{r['token_match']:.3f}",
            f"{r['extraction_strength']:.3f}",
        )
    out_console.print(table)


@app.command("dataset-inference")
@reports_errors
def dataset_inference(
    model: Optional[str] = typer.Option(None, "--model", help="Model dir (local, safetensors)."),
    suspect: Optional[str] = typer.Option(None, "--suspect", help="The texts suspected to have been trained on."),
    validation: Optional[str] = typer.Option(None, "--validation", help="Comparable texts surely not trained on."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Reference model dir: adds the reference feature."),
    out: Optional[str] = typer.Option(None, "--out", help="Run directory [default: runs/dataset-inference]."),
    config: Optional[str] = typer.Option(None, "--config", help="JSON or TOML file of settings; flags override it."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Claim 'trained on' when p < alpha [default: 0.1]."),
    n_splits: Optional[int] = typer.Option(None, "--splits", help="Seeded half/half splits; the median p-value is reported [default: 10]."),
    false_positive_check: Optional[bool] = typer.Option(None, "--false-positive-check", help="Also test two halves of the validation set against each other, repeatedly."),
    fp_repeats: Optional[int] = typer.Option(None, "--fp-repeats", help="Repeats of the false-positive check [default: 50]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the splits [default: 0]."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, float32, bfloat16, float16."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, ..."),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code", help="Allow a model's own code to run."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Score cache root."),
    no_cache: Optional[bool] = typer.Option(None, "--no-cache", help="Keep no scores on disk."),
    skip_invalid: Optional[bool] = typer.Option(None, "--skip-invalid", help="Skip invalid records instead of stopping."),
    no_report: Optional[bool] = typer.Option(None, "--no-report", help="Skip report.html."),
):
    """Dataset inference (Maini et al. 2024): was this set of texts trained on? Answers with a p-value.

    Combines many membership features with a classifier fitted on half of each set and a
    one-sided Welch t-test on the other halves; needs at least 10 texts in each set.
    """
    from memaudit.io.config import DatasetInferenceConfig, resolve_config
    from memaudit.mia.dataset_inference import run_dataset_inference

    cfg = resolve_config(
        DatasetInferenceConfig, config_file=config, model=model, suspect=suspect, validation=validation, reference=reference,
        out=out, alpha=alpha, n_splits=n_splits, false_positive_check=false_positive_check, fp_repeats=fp_repeats, seed=seed,
        dtype=dtype, device=device, trust_remote_code=trust_remote_code, cache_dir=cache_dir, no_cache=no_cache,
        skip_invalid=skip_invalid, report=None if no_report is None else not no_report,
    )
    with StageBars() as bars:
        results = run_dataset_inference(cfg, progress=bars)
    out_console.print(f"p-value {results['p_value']:.3g}: {results['verdict']}")
    check = results["false_positive_check"]
    if check:
        out_console.print(f"false-positive check: {100 * check['share_below_alpha']:.0f}% of {len(check['p_values'])} runs had p < {cfg.alpha:g}")
    for w in results["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    out_console.print(f"results: {Path(cfg.out) / 'results.json'}")


corpus_app = typer.Typer(no_args_is_help=True, help="The embedded corpus: this Python's standard-library source.")
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("snippets")
@reports_errors
def corpus_snippets(
    out: str = typer.Option(..., "--out", help="JSONL file to write (fields: id, text)."),
    n: int = typer.Option(200, "--n", help="Snippets to write."),
    offset: int = typer.Option(0, "--offset", help="Skip this many first: two offsets give disjoint sets of one distribution."),
    chars: int = typer.Option(240, "--chars", help="About this many characters each, cut at line ends."),
    seed: int = typer.Option(0, "--seed", help="Seed of the shuffle (keep it when taking disjoint slices)."),
):
    """Write standard-library source snippets as JSONL: members, non-members, suspects, validation sets."""
    from memaudit.io.corpus import stdlib_snippets
    from memaudit.io.texts import write_texts

    if n < 1 or offset < 0:
        from memaudit.errors import InputError

        raise InputError("--n must be >= 1 and --offset >= 0")
    texts = stdlib_snippets(offset + n, chars=chars, seed=seed)[offset:]
    write_texts(out, ((f"s{offset + i:05d}", t) for i, t in enumerate(texts)))
    out_console.print(f"{len(texts)} snippets -> {out}")


traps_app = typer.Typer(no_args_is_help=True, help="Copyright traps: make, inject into documents, detect in a model.")
app.add_typer(traps_app, name="traps")


@traps_app.command("make")
@reports_errors
def traps_make(
    reference: str = typer.Option(..., "--reference", help="Reference model dir to sample traps from."),
    out: str = typer.Option("traps.jsonl", "--out", help="The trap ledger to write."),
    lengths: str = typer.Option("25,50,100", "--lengths", help="Trap lengths in reference tokens."),
    per_bucket: int = typer.Option(4, "--per-bucket", help="Traps per length and perplexity bucket (plus as many controls)."),
    buckets: int = typer.Option(3, "--buckets", help="Perplexity buckets (quantiles of the sampled pool)."),
    pool_factor: int = typer.Option(25, "--pool-factor", help="Sequences sampled per trap needed (raise it when too few are distinct)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling."),
):
    """Sample trap sequences from a reference LM, bucket them by perplexity, keep distinct ones.

    Each bucket gets --per-bucket traps to inject and as many controls that are never injected.
    """
    from memaudit.lab.canaries import write_ledger
    from memaudit.models.hf import load_causal_lm
    from memaudit.mia.traps import make_traps

    with StageBars() as bars:
        made = make_traps(load_causal_lm(reference), lengths=_int_list(lengths, "--lengths"), per_bucket=per_bucket,
                          n_buckets=buckets, pool_factor=pool_factor, seed=seed, progress=bars)
    write_ledger(out, made)
    out_console.print(f"{sum(t.member for t in made)} traps + {sum(not t.member for t in made)} controls -> {out}")


@traps_app.command("inject")
@reports_errors
def traps_inject(
    ledger: str = typer.Option(..., "--ledger", help="Trap ledger from `memaudit traps make`."),
    docs: str = typer.Option(..., "--docs", help="Documents: 'stdlib', a folder, .jsonl, .txt or .parquet."),
    out: str = typer.Option(..., "--out", help="The injected corpus to write (.jsonl); the originals are untouched."),
    repetitions: str = typer.Option("1,10,100", "--repetitions", help="Copies per trap, rotated over the traps of each bucket."),
    corpus_chars: Optional[int] = typer.Option(None, "--corpus-chars", help="Use only the first documents up to this many characters."),
    seed: int = typer.Option(0, "--seed", help="Seed of documents and positions."),
):
    """Put one trap per document, repeated n times at line (or word) starts, and record every offset.

    Writes the corpus as JSONL (feed it to `memaudit train --corpus`) and the ledger with
    each copy's document and character offset next to it (<out>.ledger.jsonl).
    """
    from memaudit.lab.canaries import read_ledger, write_ledger
    from memaudit.io.corpus import load_corpus
    from memaudit.io.texts import write_texts
    from memaudit.mia.traps import inject_traps

    documents = [(f"doc-{i:05d}", d) for i, d in enumerate(load_corpus(docs, max_chars=corpus_chars, seed=seed))]
    new_docs, traps = inject_traps(read_ledger(ledger), documents, repetitions=_int_list(repetitions, "--repetitions"), seed=seed)
    write_texts(out, new_docs)
    ledger_out = write_ledger(Path(out).with_suffix(".ledger.jsonl"), traps)
    out_console.print(f"{len(new_docs)} documents -> {out}; ledger with offsets -> {ledger_out}")


@traps_app.command("detect")
@reports_errors
def traps_detect(
    model: str = typer.Option(..., "--model", help="The model suspected of training on the documents."),
    reference: str = typer.Option(..., "--reference", help="A reference model that surely did not (e.g. the one traps came from)."),
    ledger: str = typer.Option(..., "--ledger", help="The ledger `memaudit traps inject` wrote."),
    out: str = typer.Option("runs/traps", "--out", help="Run directory."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Score cache root."),
    docs: Optional[str] = typer.Option(None, "--docs", help="The injected corpus, to score each trap after its document context."),
    context_chars: int = typer.Option(0, "--context-chars", help="Characters of preceding document text to condition on (needs --docs)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
):
    """Detect injected traps: AUC of traps vs controls per length x repetitions x perplexity bucket.

    With --docs and --context-chars, traps are also scored after the document text that
    precedes them (controls after the same text as their paired trap).
    """
    from memaudit.scoring.cache import resolve_cache_root
    from memaudit.mia.traps import run_traps_detect

    with StageBars() as bars:
        results = run_traps_detect(model=model, reference=reference, ledger=ledger, out=out,
                                   cache_root=resolve_cache_root(cache_dir, False), seed=seed, progress=bars,
                                   docs=docs, context_chars=context_chars)
    table = Table(title="Trap detection, buckets pooled (AUC)")
    for col in ("length", "repetitions", *results["attacks"]):
        table.add_column(col, justify="right")
    for c in results["pooled_grid"]:
        table.add_row(str(c["length"]), str(c["repetitions"]), *(f"{c[a]['value']:.2f}" for a in results["attacks"]))
    out_console.print(table)
    out_console.print(f"report: {Path(out) / 'report.html'}")


canaries_app = typer.Typer(no_args_is_help=True, help="Plant fake secrets: make canaries and their ledger.")
app.add_typer(canaries_app, name="canaries")


def _int_list(text: str, name: str) -> tuple[int, ...]:
    from memaudit.errors import InputError

    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{name} must be a comma list of integers, got '{text}'") from None
    if not values:
        raise InputError(f"{name} is empty")
    return values


@canaries_app.command("make")
@reports_errors
def canaries_make(
    out: str = typer.Option("canaries.jsonl", "--out", help="The ledger to write (JSONL)."),
    repetitions: str = typer.Option("1,2,4,8,16,32", "--repetitions", help="Repetition counts; each gets --per-level canaries."),
    per_level: int = typer.Option(4, "--per-level", help="Canaries per repetition count (each with a held-out twin)."),
    templates: str = typer.Option("api_key,card,phone,passphrase", "--templates", help="Templates to rotate through."),
    policy: str = typer.Option("uniform", "--policy", help="When in training they are inserted: uniform, early or late."),
    seed: int = typer.Option(0, "--seed", help="Seed of names and secrets."),
):
    """Make canaries (fake API keys, card numbers, phone numbers, passphrases) and their twins.

    Each canary has a unique prefix and a random secret; its twin comes from the same
    template and is never inserted. `memaudit train --ledger` inserts the members and
    records where.
    """
    from memaudit.lab.canaries import make_canaries, write_ledger

    made = make_canaries(
        repetitions=_int_list(repetitions, "--repetitions"), per_level=per_level, templates=tuple(templates.split(",")),
        policy=policy, seed=seed,
    )
    write_ledger(out, made)
    out_console.print(f"{sum(c.member for c in made)} canaries + {sum(not c.member for c in made)} twins -> {out}")


@canaries_app.command("split")
@reports_errors
def canaries_split(
    ledger: str = typer.Option(..., "--ledger", help="A ledger (e.g. the one `memaudit train` wrote into its model dir)."),
    min_repetitions: int = typer.Option(1, "--min-repetitions", help="Members inserted at least this often form the forget set."),
    forget: str = typer.Option("forget.jsonl", "--forget", help="Where to write the forget set (JSONL with text and prefix)."),
    holdout: str = typer.Option("holdout.jsonl", "--holdout", help="Where to write their never-inserted twins."),
):
    """Split a ledger into a forget set (members) and a holdout (their twins) for `unlearn` / `unlearn-eval`."""
    from memaudit.lab.canaries import read_ledger, split_ledger, write_texts_with_prefix

    f, h = split_ledger(read_ledger(ledger), min_repetitions=min_repetitions)
    write_texts_with_prefix(forget, f)
    write_texts_with_prefix(holdout, h)
    out_console.print(f"{len(f)} canaries -> {forget}, {len(h)} twins -> {holdout}")


@app.command()
@reports_errors
def train(
    corpus: str = typer.Option("stdlib", "--corpus", help="'stdlib' (this Python's standard library), a folder, .jsonl, .txt or .parquet."),
    out: str = typer.Option(..., "--out", help="Model dir to write (resumes a killed run with the same settings)."),
    ledger: Optional[str] = typer.Option(None, "--ledger", help="Canary ledger from `memaudit canaries make`: members are inserted."),
    model_size: str = typer.Option("tiny", "--model-size", help="micro, tiny, small or base."),
    steps: int = typer.Option(300, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(16, "--batch-size", help="Sequences per step."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per sequence."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (warm-up, then cosine decay)."),
    vocab_size: int = typer.Option(4096, "--vocab-size", help="BPE vocabulary size (trained on the corpus)."),
    corpus_chars: Optional[int] = typer.Option(None, "--corpus-chars", help="Use only the first documents up to this many characters."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="Steps between checkpoints (0: none)."),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Continue training this model dir (its tokenizer and size are kept)."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, data order and insertion places."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, ...; training is float32."),
):
    """Train a GPT-2-style model from scratch with canaries inserted at known counts and times.

    Writes a standard model dir (safetensors + tokenizer) that every command loads, plus the
    ledger with each insertion's step, row and offset. Killed and restarted with the same
    settings, it resumes from the last checkpoint and ends with the same weights.
    """
    from memaudit.lab.train import TrainConfig, run_train

    cfg = TrainConfig(
        corpus=corpus, out=out, ledger=ledger, model_size=model_size, steps=steps, batch_size=batch_size, seq_len=seq_len,
        lr=lr, vocab_size=vocab_size, corpus_chars=corpus_chars, checkpoint_every=checkpoint_every, init_from=init_from, seed=seed,
        device=device,
    )
    with StageBars() as bars:
        path = run_train(cfg, progress=bars)
    out_console.print(f"model: {path}")


@app.command("attacks")
@reports_errors
def list_attacks():
    """List the registered membership-inference attacks."""
    from memaudit.attacks import ATTACKS

    table = Table(title="Registered attacks (higher score = more likely member)")
    table.add_column("name")
    table.add_column("needs")
    table.add_column("params")
    table.add_column("description")
    for a in ATTACKS:
        params = ", ".join(f"{k}={v:g}" for k, v in a.defaults.items())
        table.add_row(a.name, ", ".join(sorted(a.needs)) or "-", params or "-", a.description)
    out_console.print(table)


@app.command()
@reports_errors
def demo(
    out: str = typer.Option("runs/demo", "--out", help="Where the demo writes its canaries, model, cache and report."),
    quick: bool = typer.Option(False, "--quick", help="A smaller run of about 30 seconds (used by the tests)."),
    seed: int = typer.Option(0, "--seed", help="Seed of canaries, training and evaluation."),
):
    """Plant fake secrets in standard-library source, train a small model, and show what it memorized.

    Everything is made here, with no download: canaries at known repetition counts (each
    with a never-inserted twin), a tokenizer and a GPT-2-style model trained on this
    Python's own standard library. Then extraction, recognition, exposure and membership
    inference are measured per repetition count, and one HTML report shows them.
    """
    from memaudit.lab.demo import DemoSettings, run_demo

    settings = DemoSettings.quick(seed=seed) if quick else DemoSettings(seed=seed)
    with StageBars() as bars:
        outcome = run_demo(Path(out), settings, progress=bars)
    _print_demo_summary(outcome.results)
    out_console.print(f"report: {outcome.report}")


def _print_demo_summary(results: dict) -> None:
    table = Table(title="What the model kept of its canaries (members vs never-seen twins)")
    for col in ("reps", "extracted", "recognized", "exposure", "twins' exp.", "AUC (loss)"):
        table.add_column(col, justify="right")
    for level, r in results["summary"]["by_level"].items():
        table.add_row(
            str(level), f"{r['exact']:.2f}", f"{r['recognition']:.2f}", f"{r['exposure']:.1f}", f"{r['twins_exposure']:.1f}",
            f"{r['auc']['loss']:.2f}",
        )
    out_console.print(table)


from . import diffusion, index, probe, unlearn  # noqa: E402,F401  register `diffusion ...`, `index ...`, `overlap`, `probe ...`, `unlearn`, `unlearn-eval`


if __name__ == "__main__":
    main()
