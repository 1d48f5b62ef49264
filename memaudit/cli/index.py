"""``memaudit index build|count|locate|longest|overlap|info``, ``memaudit overlap`` and
``memaudit contamination``: the corpus index.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from memaudit.index.config import (
    ContaminationConfig,
    IndexBuildConfig,
    InfoConfig,
    LocateConfig,
    OverlapConfig,
    QueryConfig,
    TextsOverlapConfig,
)

from .common import StageBars, config_command, console, out_console, say_skipped

app = typer.Typer()
index_app = typer.Typer(
    no_args_is_help=True,
    help="Corpus index: build a suffix-array index of a training corpus and query it.",
)


@config_command(index_app, "build", IndexBuildConfig)
def index_build(cfg: IndexBuildConfig) -> None:
    """Tokenize a corpus with a model's tokenizer and build its suffix-array index.

    Shards the corpus by a memory budget; each shard is tokenized to a memory-mapped token
    file and its suffix array sorted by libdivsufsort. Killed midway, the same command
    reuses every finished shard. Query it with `memaudit index count|locate|longest|overlap`,
    or pass it to `extract`/`mia --index` and `memaudit overlap`.
    """
    from memaudit.index.build import build_index

    with StageBars() as bars:
        index = build_index(cfg, progress=bars)
    say_skipped(index.meta["skipped"], Path(cfg.out) / "index.json")
    s = index.meta["build"]["seconds"]
    out_console.print(
        f"{len(index):,} {index.unit}, {index.n_docs:,} documents, {len(index.shards)} shard(s) -> "
        f"{cfg.out} "
        f"(tokenize {s['tokenize']:.1f} s, sort {s['sort']:.1f} s)"
    )


def _batch(cfg: QueryConfig, what: str) -> None:
    """--queries FILE: one JSON line per query on stdout, or the rows written to --out."""
    from memaudit.index.queries import batch_queries

    rows = batch_queries(cfg, what)
    if cfg.out:
        out_console.print(f"{len(rows)} queries answered -> {cfg.out}")
        return
    for row in rows:  # plain print: one JSON line each, never wrapped or highlighted
        out_console.print(json.dumps(row), markup=False, highlight=False, soft_wrap=True)


@config_command(index_app, "count", QueryConfig)
def index_count(cfg: QueryConfig) -> None:
    """How many times a span occurs in the corpus (or each query of --queries FILE)."""
    from memaudit.index.queries import open_and_encode

    if cfg.query is None:
        return _batch(cfg, "count")
    index, tokens = open_and_encode(cfg.index_dir, cfg.query, cfg.ids)
    n = index.count(tokens)
    out_console.print(n)
    if (
        n == 0 and not cfg.ids and not index.is_bytes
    ):  # the usual surprise: BPE tokenizes a word differently after a space
        console.print(
            f"[dim]note: tokenized as {tokens}; a span that starts mid-line in the corpus may "
            "tokenize differently "
            "(try a leading space)[/]"
        )


@config_command(index_app, "locate", LocateConfig)
def index_locate(cfg: LocateConfig) -> None:
    """Where a span occurs: document, offset and the surrounding text."""
    from memaudit.index.queries import locate_in_context, open_and_encode

    index, tokens = open_and_encode(cfg.index_dir, cfg.query, cfg.ids)
    table = Table(title=f"{index.count(tokens):,} occurrence(s)")
    for col in ("document", "offset", "in context"):
        table.add_column(col)
    for doc, offset, shown in locate_in_context(
        index, tokens, limit=cfg.limit, context=cfg.context
    ):
        table.add_row(doc, str(offset), shown)
    out_console.print(table)


@config_command(index_app, "longest", QueryConfig)
def index_longest(cfg: QueryConfig) -> None:
    """For each token of the query, the longest span starting there that occurs in the corpus
    (JSON; with --queries FILE, one line per query).
    """
    from memaudit.index.queries import open_and_encode

    if cfg.query is None:
        return _batch(cfg, "longest")
    index, tokens = open_and_encode(cfg.index_dir, cfg.query, cfg.ids)
    out_console.print_json(json.dumps({"tokens": tokens, "longest": index.longest(tokens)}))


@config_command(index_app, "overlap", TextsOverlapConfig)
def index_overlap(cfg: TextsOverlapConfig) -> None:
    """Verbatim overlap of given texts with the corpus: share of tokens copied, spans and
    sources.
    """
    from memaudit.index.queries import texts_overlap

    found = texts_overlap(cfg)
    mean = sum(f["coverage"] for f in found) / len(found)
    copied = sum(bool(f["spans"]) for f in found)
    out_console.print(
        f"{len(found)} texts: mean coverage {mean:.3f}, {copied} with a copied span of >= "
        f"{cfg.min_tokens} tokens"
    )


@config_command(index_app, "info", InfoConfig)
def index_info(cfg: InfoConfig) -> None:
    """What an index holds: tokens, documents, shards, tokenizer, how it was built."""
    from memaudit.index.queries import index_info as read_info

    info = read_info(cfg.index_dir)
    shards = info.pop("shards")
    out_console.print_json(json.dumps(info))
    out_console.print(f"{shards} shard(s)")


@config_command(app, "overlap", OverlapConfig)
def overlap(cfg: OverlapConfig) -> None:
    """Regurgitation in free generation: what share of the model's output is copied from its corpus,
    and from where?

    Generates from every prompt, finds every span of >= --min-tokens tokens that occurs
    verbatim in the indexed corpus, and reports the share of generated tokens copied (with a
    bootstrap CI), the share of generations with a copy (Wilson CI), the longest spans and
    their source documents.
    """
    from memaudit.index.overlap import run_overlap

    with StageBars() as bars:
        outcome = run_overlap(cfg, progress=bars)
    say_skipped(outcome.results["data"]["skipped"], outcome.out_dir / "results.json")
    o = outcome.results["overlap"]
    out_console.print(
        f"copied (spans >= {o['min_tokens']} tokens): mean {o['mean_coverage']['value']:.3f} of "
        "generated tokens; "
        f"{o['share_with_copy']['value']:.3f} of generations hold a copy; longest span "
        f"{o['longest']['max']} tokens"
    )
    for s in o["top_sources"][:5]:
        console.print(f"  {s['copied_tokens']:>6} tokens from {s['source']}")
    out_console.print(f"results: {outcome.out_dir / 'results.json'}")
    if cfg.report:
        out_console.print(f"report:  {outcome.out_dir / 'report.html'}")


@config_command(app, "contamination", ContaminationConfig)
def contamination(cfg: ContaminationConfig) -> None:
    """Benchmark contamination: which items does the training corpus hold, and (with --model)
    how much does that inflate the score?

    Looks every item's n-grams up in the corpus index (13 tokens, or 50 bytes on a byte index,
    by default): share found, longest verbatim match, source documents, and `contaminated` at
    --threshold (PaLM's 0.7 by default; 0: any n-gram, as GPT-3 and lm-eval). With --model,
    greedy exact-match accuracy and answer NLL on dirty vs clean items, and their differences
    with bootstrap CIs.
    """
    from memaudit.index.contamination import run_contamination

    with StageBars() as bars:
        outcome = run_contamination(cfg, progress=bars)
    c = outcome.results["contamination"]
    share = c["contaminated_share"]
    out_console.print(
        f"contaminated: {c['contaminated']} of {c['eligible']} items "
        f"({share['value']:.3f}, 95% CI [{share['ci'][0]:.3f}, {share['ci'][1]:.3f}]) at >= "
        f"{c['threshold']:g} of their {c['ngram']}-grams ({c['unit']}); longest match "
        f"{c['longest_max']} {c['unit']}"
    )
    a = outcome.results["answers"]
    if a:
        d = a["accuracy_difference"]
        out_console.print(
            f"accuracy dirty {a['dirty']['accuracy']['value']:.3f} vs clean "
            f"{a['clean']['accuracy']['value']:.3f}: difference {d['value']:+.3f} "
            f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
        )
    out_console.print(f"results: {outcome.out_dir / 'results.json'}")
    if cfg.report:
        out_console.print(f"report:  {outcome.out_dir / 'report.html'}")
