"""Two labelled sets (members / non-members, suspect / validation), read, loaded and checked up
front.

Everything that can be wrong with the input fails here, before any output is written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from memaudit.errors import InputError
from memaudit.io.texts import Fields, ReadResult, Skipped, TextRecord, text_hash
from memaudit.models.heads import text_heads
from memaudit.models.hf import HFCausalLM, LoadOptions
from memaudit.models.sources import FILES, Sources


@dataclass
class PreparedSets:
    """Everything checked and loaded before a single output file is touched."""

    records: list[TextRecord]
    skipped: list[Skipped]
    warnings: list[str]
    target: HFCausalLM
    reference: HFCausalLM | None
    target_ids: list[list[int]]
    reference_ids: list[list[int]] | None
    texts_cut: int = 0
    """Texts cut to ``max_tokens`` target tokens (0 when nothing was cut or there is no limit)."""


def prepare_sets(
    positives: str,
    negatives: str,
    *,
    model: str,
    reference: str | None,
    options: LoadOptions,
    skip_invalid: bool,
    names: tuple[str, str] = ("members", "non-members"),
    adapter: str | None = None,
    max_tokens: int | None = None,
    sources: Sources = FILES,
) -> PreparedSets:
    """Read two labelled sets (1 and 0), load the models, tokenize and check every text.

    Everything that can be wrong with the input fails here, before any output is written.
    ``sources``: where the named texts and models come from (files, unless the API gave them).
    """
    pos, neg = read_two(positives, negatives, skip_invalid=skip_invalid, sources=sources)
    return prepare_read(
        pos,
        neg,
        (positives, negatives),
        model=model,
        reference=reference,
        options=options,
        skip_invalid=skip_invalid,
        names=names,
        adapter=adapter,
        max_tokens=max_tokens,
        sources=sources,
    )


def read_two(
    positives: str, negatives: str, *, skip_invalid: bool, sources: Sources = FILES
) -> tuple[ReadResult, ReadResult]:
    """Two files, one per class: every text of the first labelled 1, of the second 0."""
    return (
        sources.read_texts(positives, label=1, skip_invalid=skip_invalid),
        sources.read_texts(negatives, label=0, skip_invalid=skip_invalid),
    )


def read_labelled(
    path: str,
    *,
    fields: Fields,
    pair: tuple[str, str] | None,
    skip_invalid: bool,
    sources: Sources = FILES,
) -> tuple[ReadResult, ReadResult]:
    """Members and non-members from one file that holds both, as benchmarks ship them.

    Either each record has a label field (``fields.label``, 0 or 1; WikiMIA: ``label`` with
    the text in ``input``) or each record holds one member and one non-member text in the
    two ``pair`` fields (MIMIR: ``member``, ``nonmember``).
    """
    if pair is not None:
        member, nonmember = pair
        read = sources.read_texts
        pos = read(path, label=1, skip_invalid=skip_invalid, fields=Fields(text=member))
        neg = read(path, label=0, skip_invalid=skip_invalid, fields=Fields(text=nonmember))
        return pos, neg
    both = sources.read_texts(path, skip_invalid=skip_invalid, fields=fields)
    split = [ReadResult([r for r in both.records if r.label == label], []) for label in (1, 0)]
    return ReadResult(split[0].records, both.skipped), split[1]


def prepare_read(
    pos: ReadResult,
    neg: ReadResult,
    paths: tuple[str, str],
    *,
    model: str,
    reference: str | None,
    options: LoadOptions,
    skip_invalid: bool,
    names: tuple[str, str] = ("members", "non-members"),
    max_tokens: int | None = None,
    adapter: str | None = None,
    sources: Sources = FILES,
) -> PreparedSets:
    """``prepare_sets`` for sets already read (``read_labelled``).

    ``max_tokens``: each text longer than this many target tokens is cut after its last one
    (:func:`memaudit.models.heads.text_heads`) before anything else sees it.
    """
    positives, negatives = paths
    target = sources.load_causal_lm(model, options, adapter=adapter)  # the adapter: the target's
    ref = sources.load_causal_lm(reference, options) if reference else None
    records, n_cut = cut_records(target, pos.records + neg.records, max_tokens)
    records, target_ids, ref_ids, short = tokenize_and_check(target, ref, records, skip_invalid)
    for label, name, path in ((1, names[0], positives), (0, names[1], negatives)):
        if not any(r.label == label for r in records):
            raise InputError(f"no valid {name} left to score", path=path)
    warnings = overlap_warnings(pos.records, neg.records, names)
    return PreparedSets(
        records,
        pos.skipped + neg.skipped + short,
        warnings,
        target,
        ref,
        target_ids,
        ref_ids,
        n_cut,
    )


def cut_records(
    target: HFCausalLM, records: list[TextRecord], max_tokens: int | None
) -> tuple[list[TextRecord], int]:
    """Records whose text has more than ``max_tokens`` target tokens, cut to them; how many."""
    if not max_tokens:
        return records, 0
    texts, cut = text_heads(target, [r.text for r in records], max_tokens)
    out = [replace(r, text=t) if c else r for r, t, c in zip(records, texts, cut)]
    return out, sum(cut)


def overlap_warnings(
    first: list[TextRecord], second: list[TextRecord], names=("members", "non-members")
) -> list[str]:
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
        reason = (
            f"text has {len(ids[bad][i])} token(s) under the {bad} tokenizer; at least 2 are needed"
        )
        if not skip_invalid:
            raise InputError(reason, path=r.path, line=r.line)
        skipped.append(Skipped(r.path or r.id, r.line, reason))
    pick = lambda seq: [seq[i] for i in keep]  # noqa: E731
    return (
        pick(records),
        pick(ids["target"]),
        pick(ids["reference"]) if reference is not None else None,
        skipped,
    )
