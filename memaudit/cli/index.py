"""The ``memaudit index ...`` and ``memaudit overlap`` commands (registered by cli.py)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from .app import StageBars, app, console, out_console, reports_errors
from memaudit.errors import InputError

index_app = typer.Typer(no_args_is_help=True, help="Corpus index: build a suffix-array index of a training corpus and query it.")
app.add_typer(index_app, name="index")

QUERY_HELP = "The span to look up: text (tokenized with the index's tokenizer), or token ids with --ids."


@index_app.command("build")
@reports_errors
def index_build(
    corpus: str = typer.Argument(..., help="'stdlib' (this Python's standard library), a folder (a document per file), .jsonl, .txt or .parquet."),
    tokenizer: str = typer.Option(..., "--tokenizer", help="Model (or tokenizer) dir whose tokenizer the model was trained with."),
    out: str = typer.Option(..., "--out", help="Index directory to write (a rebuild reuses its finished shards)."),
    memory_gb: float = typer.Option(4.0, "--memory-gb", help="Memory one shard's build may use; sets the shard size."),
    max_shard_tokens: Optional[int] = typer.Option(None, "--max-shard-tokens", help="Tokens per shard (overrides --memory-gb)."),
    engine: str = typer.Option("local", "--engine", help="local (one shard at a time) or ray (shards as parallel Ray tasks; pip install 'memaudit[dist]')."),
    workers: int = typer.Option(2, "--workers", help="CPUs of the local Ray started by --engine ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Address of a running Ray cluster (e.g. 'auto'); the index dir must be on storage every node sees."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip invalid records (listed in index.json) instead of stopping."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow a tokenizer's own code to run."),
):
    """Tokenize a corpus with a model's tokenizer and build its suffix-array index.

    Shards the corpus by a memory budget; each shard is tokenized to a memory-mapped token
    file and its suffix array sorted by libdivsufsort. Killed midway, the same command
    reuses every finished shard. Query it with `memaudit index count|locate|longest|overlap`,
    or pass it to `extract`/`mia --index` and `memaudit overlap`.
    """
    from memaudit.index.build import IndexBuildConfig, build_index

    cfg = IndexBuildConfig(
        corpus=corpus, tokenizer=tokenizer, out=out, memory_gb=memory_gb, max_shard_tokens=max_shard_tokens, engine=engine,
        workers=workers, ray_address=ray_address, skip_invalid=skip_invalid, trust_remote_code=trust_remote_code,
    )
    with StageBars() as bars:
        index = build_index(cfg, progress=bars)
    s = index.meta["build"]["seconds"]
    out_console.print(
        f"{len(index):,} tokens, {index.n_docs:,} documents, {len(index.shards)} shard(s) -> {out} "
        f"(tokenize {s['tokenize']:.1f} s, sort {s['sort']:.1f} s)"
    )


def _open_and_encode(index_dir: str, query: str, ids: bool):
    from memaudit.index.suffix import CorpusIndex

    index = CorpusIndex.load(index_dir)
    if ids:
        try:
            tokens = [int(t) for t in query.replace(",", " ").split()]
        except ValueError:
            raise InputError(f"--ids expects integers separated by commas or spaces, got '{query}'") from None
    else:
        tokens = index.tokenizer()(query, verbose=False)["input_ids"]
    if not tokens:
        raise InputError("the query is empty")
    return index, tokens


@index_app.command("count")
@reports_errors
def index_count(
    index_dir: str = typer.Argument(..., help="Index directory."),
    query: str = typer.Argument(..., help=QUERY_HELP),
    ids: bool = typer.Option(False, "--ids", help="The query is token ids ('12,7,99')."),
):
    """How many times a span occurs in the corpus."""
    index, tokens = _open_and_encode(index_dir, query, ids)
    n = index.count(tokens)
    out_console.print(n)
    if n == 0 and not ids:  # the usual surprise: BPE tokenizes a word differently after a space
        console.print(f"[dim]note: tokenized as {tokens}; a span that starts mid-line in the corpus may tokenize differently (try a leading space)[/]")


@index_app.command("locate")
@reports_errors
def index_locate(
    index_dir: str = typer.Argument(..., help="Index directory."),
    query: str = typer.Argument(..., help=QUERY_HELP),
    ids: bool = typer.Option(False, "--ids", help="The query is token ids."),
    limit: int = typer.Option(10, "--limit", help="Occurrences to list at most (the first in corpus order)."),
    context: int = typer.Option(8, "--context", help="Tokens of context shown on each side."),
):
    """Where a span occurs: document, offset and the surrounding text."""
    index, tokens = _open_and_encode(index_dir, query, ids)
    decode = index.tokenizer().decode
    table = Table(title=f"{index.count(tokens):,} occurrence(s)")
    for col in ("document", "offset", "in context"):
        table.add_column(col)
    m = len(tokens)
    for doc, offset in index.locate(tokens, limit=limit):
        before = decode(index.document(doc, offset - context, offset))
        after = decode(index.document(doc, offset + m, offset + m + context))
        table.add_row(index.doc_id(doc), str(offset), f"{before!r} [{decode(index.document(doc, offset, offset + m))!r}] {after!r}")
    out_console.print(table)


@index_app.command("longest")
@reports_errors
def index_longest(
    index_dir: str = typer.Argument(..., help="Index directory."),
    query: str = typer.Argument(..., help=QUERY_HELP),
    ids: bool = typer.Option(False, "--ids", help="The query is token ids."),
):
    """For each token of the query, the longest span starting there that occurs in the corpus (JSON)."""
    index, tokens = _open_and_encode(index_dir, query, ids)
    out_console.print_json(json.dumps({"tokens": tokens, "longest": index.longest(tokens)}))


@index_app.command("overlap")
@reports_errors
def index_overlap(
    index_dir: str = typer.Argument(..., help="Index directory."),
    texts: str = typer.Option(..., "--texts", help="Texts to check (e.g. saved generations): .jsonl, .txt, .parquet or a folder."),
    min_tokens: int = typer.Option(8, "--min-tokens", help="Shortest span that counts as copied."),
    out: Optional[str] = typer.Option(None, "--out", help="Write one JSON line per text here (default: print a summary only)."),
):
    """Verbatim overlap of given texts with the corpus: share of tokens copied, spans and sources."""
    from memaudit.io.atomic import write_text_atomic
    from memaudit.io.texts import read_texts
    from memaudit.index.suffix import CorpusIndex

    index = CorpusIndex.load(index_dir)
    records = read_texts(texts).records
    encoded = index.tokenizer()([r.text for r in records], verbose=False)["input_ids"]
    found = [index.overlap(ids, min_tokens=min_tokens) for ids in encoded]
    for f in found:
        for s in f["spans"]:
            s["sources"] = [index.doc_id(d) for d in s["docs"]]
    if out:
        write_text_atomic(out, "".join(json.dumps({"id": r.id, **f}) + "\n" for r, f in zip(records, found)))
    mean = sum(f["coverage"] for f in found) / len(found)
    copied = sum(bool(f["spans"]) for f in found)
    out_console.print(f"{len(found)} texts: mean coverage {mean:.3f}, {copied} with a copied span of >= {min_tokens} tokens")


@index_app.command("info")
@reports_errors
def index_info(index_dir: str = typer.Argument(..., help="Index directory.")):
    """What an index holds: tokens, documents, shards, tokenizer, how it was built."""
    from memaudit.index.suffix import CorpusIndex

    meta = CorpusIndex.load(index_dir).meta
    out_console.print_json(json.dumps({k: meta[k] for k in ("corpus", "tokens", "documents", "dtype", "tokenizer", "build")}))
    out_console.print(f"{len(meta['shards'])} shard(s)")


@app.command()
@reports_errors
def overlap(
    model: str = typer.Option(..., "--model", help="Model dir (local, safetensors)."),
    index: str = typer.Option(..., "--index", help="Index of the model's training corpus, built with its tokenizer."),
    prompts: str = typer.Option(..., "--prompts", help="Prompts: .jsonl, .txt, .parquet or a folder."),
    out: str = typer.Option("runs/overlap", "--out", help="Run directory."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Tokens generated per prompt."),
    temperature: float = typer.Option(0.0, "--temperature", help="0: greedy; > 0: sample at this temperature."),
    samples: int = typer.Option(1, "--samples", help="Sampled continuations per prompt (needs --temperature > 0)."),
    min_tokens: int = typer.Option(8, "--min-tokens", help="Shortest span that counts as copied."),
    batch_size: int = typer.Option(32, "--batch-size", help="Prompts decoded together."),
    seed: int = typer.Option(0, "--seed", help="Seed of sampling and of the bootstrap."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow a model's own code to run."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip invalid prompts instead of stopping."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip report.html."),
):
    """Regurgitation in free generation: what share of the model's output is copied from its corpus, and from where?

    Generates from every prompt, finds every span of >= --min-tokens tokens that occurs
    verbatim in the indexed corpus, and reports the share of generated tokens copied (with a
    bootstrap CI), the share of generations with a copy (Wilson CI), the longest spans and
    their source documents.
    """
    from memaudit.index.overlap import OverlapConfig, run_overlap

    cfg = OverlapConfig(
        model=model, index=index, prompts=prompts, out=out, max_new_tokens=max_new_tokens, temperature=temperature,
        samples=samples, min_tokens=min_tokens, batch_size=batch_size, seed=seed, dtype=dtype, device=device,
        trust_remote_code=trust_remote_code, skip_invalid=skip_invalid, report=not no_report,
    )
    with StageBars() as bars:
        outcome = run_overlap(cfg, progress=bars)
    o = outcome.results["overlap"]
    out_console.print(
        f"copied (spans >= {o['min_tokens']} tokens): mean {o['mean_coverage']['value']:.3f} of generated tokens; "
        f"{o['share_with_copy']['value']:.3f} of generations hold a copy; longest span {o['longest']['max']} tokens"
    )
    for s in o["top_sources"][:5]:
        console.print(f"  {s['copied_tokens']:>6} tokens from {s['source']}")
    out_console.print(f"results: {outcome.out_dir / 'results.json'}")
    if cfg.report:
        out_console.print(f"report:  {outcome.out_dir / 'report.html'}")
