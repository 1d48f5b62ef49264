"""Copyright traps (Meeus et al. 2024): plant sampled sequences in documents, detect them later.

``make_traps`` samples sequences from a reference LM over a temperature sweep, keeps those that
survive a decode/re-encode round trip at the same length, buckets them by their perplexity under
the reference, rejects near-duplicates (Jaccard of token n-gram sets > 0.2 against every sequence
kept for that length), and splits each bucket into traps to inject and controls that never are.
A :class:`~memaudit.mia.config.TrapRecipe` holds the temperatures, the buckets and the n-grams:
``memaudit`` (quantile buckets, trigrams) or ``paper`` (the authors' defaults). ``inject_traps``
puts one trap per document, its n copies at n distinct positions: line starts (or word starts in
single-line text), so no word and no line of code is ever split, or, recipe ``paper``, after
any space; it records each copy's character offset. Detection compares injected traps with
controls from the same buckets; see :func:`detection_grid`.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from memaudit.attacks import parse_attacks
from memaudit.attacks.views import score_views
from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.rundir import Timings
from memaudit.io.texts import read_texts
from memaudit.lab.canaries import TRAP, Canary, read_ledger
from memaudit.metrics import membership_metrics
from memaudit.mia.config import INJECT_RECIPES, TRAP_RECIPES, TrapDetectConfig, TrapRecipe
from memaudit.models.generation import sample
from memaudit.models.hf import LoadOptions, load_causal_lm
from memaudit.scoring.cache import resolve_cache_root
from memaudit.scoring.engine import ScoreSettings, score_texts

JACCARD_MAX = 0.2


def jaccard(a, b, n: int = 3) -> float:
    """Jaccard similarity of the token n-gram sets of two sequences (n = 1: of their token
    sets).

    Trigrams by default: two unrelated code snippets share most of their single tokens
    (indentation, brackets, ``self``), so a plain token-set Jaccard would call them
    duplicates; shared trigrams mean shared phrasing. The paper's recipe uses n = 1.
    """
    a, b = _ngrams(a, n), _ngrams(b, n)
    return _set_jaccard(a, b)


def _set_jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def _ngrams(ids, n: int) -> set:
    return {tuple(ids[i : i + n]) for i in range(max(1, len(ids) - n + 1))}


def make_traps(
    reference,
    *,
    lengths=(25, 50, 100),
    per_bucket: int = 4,
    recipe: TrapRecipe | None = None,
    pool_factor: int = 25,
    seed: int = 0,
    progress=None,
) -> list[Canary]:
    """``per_bucket`` traps and as many controls for each length and perplexity bucket.

    ``recipe`` (default: ``TRAP_RECIPES["memaudit"]``) gives the temperatures, the buckets and
    the n-grams of the duplicate check; :func:`memaudit.mia.config.trap_recipe` makes one.

    Raises
    ------
    InputError
        The reference has no end-of-text token to start from, a length does not fit its
        context, or too few distinct sequences survive for a bucket.
    """
    recipe = recipe or TRAP_RECIPES["memaudit"]
    tok = reference.tokenizer
    start = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
    if start is None:
        raise InputError(
            f"{reference.name}: the tokenizer has no end-of-text or BOS token to start sampling "
            "from"
        )
    traps: list[Canary] = []
    for done, length in enumerate(lengths, start=1):
        if length + 1 > reference.max_length:
            raise InputError(
                f"trap length {length} does not fit the reference's context of "
                f"{reference.max_length}"
            )
        pool = _sample_pool(
            reference,
            start,
            length,
            2 * per_bucket * recipe.buckets * pool_factor,
            recipe.temperatures,
            seed + length,
        )
        traps += _bucket_and_pick(reference, pool, length, per_bucket, recipe, seed + length)
        if progress is not None:
            progress("sampling traps", done, len(lengths))
    return traps


def _sample_pool(
    reference, start: int, length: int, n: int, temperatures, seed: int
) -> list[tuple[list[int], float]]:
    """(ids, temperature) of sampled sequences that decode and re-encode to themselves."""
    tok = reference.tokenizer
    per_t = -(-n // len(temperatures))
    pool = []
    for i, t in enumerate(temperatures):
        for ids in sample(reference, [start], per_t, length, temperature=t, seed=seed * 100 + i):
            text = tok.decode(ids)
            if start not in ids and text.strip() and tok(text, verbose=False)["input_ids"] == ids:
                pool.append((ids, t))
    return pool


def perplexity_buckets(ppl: np.ndarray, recipe: TrapRecipe) -> tuple[np.ndarray, np.ndarray]:
    """Bucket edges (buckets + 1,) and each sequence's bucket (n,), -1 outside a fixed range.

    Bucket ``b`` holds perplexities in ``[edges[b], edges[b + 1])`` (the last quantile bucket
    also its upper edge).
    """
    if recipe.perplexity_range is None:
        edges = np.quantile(ppl, np.linspace(0, 1, recipe.buckets + 1))
        bucket_of = np.searchsorted(edges, ppl, side="right") - 1
        return edges, np.clip(bucket_of, 0, recipe.buckets - 1)
    lo, hi = recipe.perplexity_range
    width = (hi - lo + 1) // recipe.buckets
    edges = lo + width * np.arange(recipe.buckets + 1, dtype=np.float64)
    unit = np.floor(ppl)
    bucket_of = ((unit - lo) // width).astype(int)
    bucket_of[(unit < lo) | (unit > hi)] = -1
    return edges, bucket_of


def _bucket_and_pick(reference, pool, length, per_bucket, recipe, seed) -> list[Canary]:
    """Go through the pool in a seeded random order, keeping a sequence when its bucket (and,
    for fixed buckets, its integer perplexity) still has room and it is no near-duplicate of
    any sequence kept for this length.
    """
    tok = reference.tokenizer
    texts = [tok.decode(ids) for ids, _ in pool]
    scores, _ = score_texts(reference, texts)
    ppl = np.exp(-np.array([t.logp.mean(dtype=np.float64) for t in scores]))
    edges, bucket_of = perplexity_buckets(ppl, recipe)
    need = 2 * per_bucket
    per_unit = None  # fixed buckets are filled evenly over their integer perplexities
    if recipe.perplexity_range is not None:
        per_unit = -(-need // int(edges[1] - edges[0]))
    grams = [_ngrams(ids, recipe.jaccard_ngram) for ids, _ in pool]
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    kept: dict[int, list[int]] = {b: [] for b in range(recipe.buckets)}
    units: dict[float, int] = {}
    for i in order:
        b, unit = int(bucket_of[i]), float(np.floor(ppl[i]))
        if b < 0 or len(kept[b]) == need or (per_unit and units.get(unit, 0) >= per_unit):
            continue
        if any(_set_jaccard(grams[i], grams[j]) > JACCARD_MAX for k in kept.values() for j in k):
            continue
        kept[b].append(i)
        units[unit] = units.get(unit, 0) + 1
    out = []
    for b, accepted in kept.items():
        if len(accepted) < need:
            raise InputError(
                f"only {len(accepted)} distinct sequences of length {length} in perplexity bucket "
                f"{b} [{edges[b]:.4g}, {edges[b + 1]:.4g}); {need} needed: lower --per-bucket or "
                "raise --pool-factor"
                + ("" if recipe.perplexity_range is None else " or change --perplexity-range")
            )
        for k, i in enumerate(accepted):
            member = k < per_bucket
            tid = f"{'trap' if member else 'ctrl'}-{length:03d}-{b}-{k % per_bucket:03d}"
            pair = f"{'ctrl' if member else 'trap'}-{length:03d}-{b}-{k % per_bucket:03d}"
            meta = {
                "length": length,
                "perplexity": float(ppl[i]),
                "bucket": b,
                "bucket_edges": edges.tolist(),
                "temperature": pool[i][1],
                "reference_tokenizer": reference.tokenizer_fingerprint,
                "recipe": recipe.to_dict(),
            }
            out.append(
                Canary(
                    tid, pair, TRAP, "", texts[i], texts[i], "", 0, 0, "uniform", member, meta=meta
                )
            )
    return out


def inject_traps(
    traps: list[Canary],
    docs: list[tuple[str, str]],
    *,
    repetitions=(1, 10, 100),
    recipe: str = "memaudit",
    seed: int = 0,
):
    """One trap per document, each repeated n times; returns (new docs, traps with repetitions and
    offsets).

    Repetition counts rotate over the traps of each (length, bucket) group, so every group
    holds every count. Offsets are character offsets in the new document. The n copies go to
    n distinct positions of the document, drawn without replacement from
    :func:`insertion_points` (``recipe``).

    Each trap goes to a random document at least as long as itself with at least n positions;
    the traps with the most copies choose first.

    Raises
    ------
    InputError
        Fewer documents than traps, or too few documents long enough to hold them.
    """
    if recipe not in INJECT_RECIPES:
        raise InputError(
            f"unknown injection recipe '{recipe}' (known: {', '.join(INJECT_RECIPES)})"
        )
    if not repetitions or min(repetitions) < 1:
        raise InputError(f"repetitions must be >= 1, got {tuple(repetitions)}")
    members = sorted(
        (t for t in traps if t.member),
        key=lambda t: (t.meta.get("length", 0), t.meta.get("bucket", 0), t.id),
    )
    if len(docs) < len(members):
        raise InputError(f"{len(members)} traps need as many documents; the corpus has {len(docs)}")
    rng = random.Random(seed)
    reps_of = {t.id: repetitions[k % len(repetitions)] for k, t in enumerate(members)}
    free = list(range(len(docs)))
    rng.shuffle(free)
    points = {i: insertion_points(docs[i][1], recipe) for i in free}
    new_docs, placed = list(docs), {}
    for trap in sorted(members, key=lambda t: (-reps_of[t.id], -len(t.text), t.id)):
        n = reps_of[trap.id]
        d = next(
            (i for i in free if len(docs[i][1]) >= len(trap.text) and len(points[i][1]) >= n),
            None,
        )
        if d is None:
            raise InputError(
                f"no document left with at least {len(trap.text)} characters and {n} "
                f"{'line or word starts' if recipe == 'memaudit' else 'spaces'} for trap "
                f"{trap.id}: the copies of a trap go to distinct positions"
            )
        free.remove(d)
        doc_id, text = docs[d]
        sep, starts = points[d]
        new_text, offsets = _insert(text, trap.text, sep, sorted(rng.sample(starts, n)))
        new_docs[d] = (doc_id, new_text)
        placed[trap.id] = [{"doc": doc_id, "char_offset": o} for o in offsets]
    out = []
    for t in traps:
        n = reps_of.get(t.id if t.member else t.pair_id, 0)
        meta = {**t.meta, "injection": recipe}
        out.append(
            replace(
                t,
                repetitions=n if t.member else 0,
                level=n,
                insertions=placed.get(t.id, []),
                meta=meta,
            )
        )
    return new_docs, out


def insertion_points(text: str, recipe: str = "memaudit") -> tuple[str, list[int]]:
    """The separator that follows each copy, and the character positions a copy may start at.

    ``memaudit``: line starts in text with line breaks (no line of code is split), else word
    starts (after a space, before a non-space). ``paper``: the start and every position right
    after a space, as the authors' inject_traps.py splits the text on spaces (their copies
    carry no separator, so a copy runs into the word after it; here a space follows it).
    """
    if recipe == "paper":
        return " ", [0] + [i + 1 for i, ch in enumerate(text) if ch == " "]
    if "\n" in text.strip():
        return "\n", [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n" and i + 1 < len(text)]
    starts = [i + 1 for i, ch in enumerate(text) if ch == " " and i + 1 < len(text)]
    return " ", [0] + [i for i in starts if text[i] != " "]


def _insert(text: str, trap: str, sep: str, positions: list[int]) -> tuple[str, list[int]]:
    """Insert ``trap + sep`` at each of the sorted ``positions``; the new text and each copy's
    offset in it.
    """
    pieces, offsets, last, shift = [], [], 0, 0
    for p in positions:
        pieces.append(text[last:p])
        offsets.append(p + shift)
        pieces.append(trap + sep)
        shift += len(trap) + len(sep)
        last = p
    pieces.append(text[last:])
    return "".join(pieces), offsets


def detection_grid(
    traps: list[Canary], scores: dict[str, np.ndarray], *, n_bootstrap: int = 1000, seed: int = 0
) -> list[dict]:
    """AUC (with CI) of injected traps vs the controls of their (length, bucket), per (length,
    repetitions, bucket).
    """
    key = lambda t: (t.meta["length"], t.meta["bucket"])  # noqa: E731
    cells = sorted({(t.meta["length"], t.level, t.meta["bucket"]) for t in traps if t.member})
    rows = []
    for length, reps, bucket in cells:
        idx_m = [
            i
            for i, t in enumerate(traps)
            if t.member and key(t) == (length, bucket) and t.level == reps
        ]
        idx_c = [i for i, t in enumerate(traps) if not t.member and key(t) == (length, bucket)]
        idx = idx_m + idx_c
        labels = np.r_[np.ones(len(idx_m)), np.zeros(len(idx_c))]
        row = {
            "length": length,
            "repetitions": reps,
            "bucket": bucket,
            "traps": len(idx_m),
            "controls": len(idx_c),
        }
        for name, v in scores.items():
            row[name] = {
                k: e.to_dict()
                for k, e in membership_metrics(
                    v[idx], labels, n_bootstrap=n_bootstrap, seed=seed
                ).items()
            }["auc"]
        rows.append(row)
    return rows


def pooled_grid(
    traps: list[Canary], scores: dict[str, np.ndarray], *, n_bootstrap: int = 1000, seed: int = 0
) -> list[dict]:
    """As :func:`detection_grid`, with the perplexity buckets pooled: one cell per (length,
    repetitions).
    """
    pooled = [replace(t, meta={**t.meta, "bucket": "all"}) for t in traps]
    return detection_grid(pooled, scores, n_bootstrap=n_bootstrap, seed=seed)


def controls_at_chance(
    traps: list[Canary], scores: dict[str, np.ndarray], *, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """AUC between two random halves of the controls, split within each (length, bucket): should
    sit near 0.5.
    """
    rng = random.Random(seed)
    first, second = [], []
    for cell in sorted({(t.meta["length"], t.meta["bucket"]) for t in traps}):
        idx = [
            i
            for i, t in enumerate(traps)
            if not t.member and (t.meta["length"], t.meta["bucket"]) == cell
        ]
        rng.shuffle(idx)
        first += idx[: len(idx) // 2]
        second += idx[len(idx) // 2 :]
    idx = first + second
    labels = np.r_[np.ones(len(first)), np.zeros(len(second))]
    return {
        name: membership_metrics(v[idx], labels, n_bootstrap=n_bootstrap, seed=seed)[
            "auc"
        ].to_dict()
        for name, v in scores.items()
    }


DETECT_ATTACKS = "reference,loss,min_k"


def trap_contexts(traps: list[Canary], docs: dict[str, str], chars: int) -> list[str]:
    """The text before each injected trap's first copy (from a line start, at most ``chars`` long).

    A control gets the context of its paired trap, so both are read in the same place.
    """
    by_id = {t.id: t for t in traps}
    out = []
    for t in traps:
        owner = t if t.member else by_id.get(t.pair_id)
        if owner is None or not owner.insertions:
            out.append("")
            continue
        ins = owner.insertions[0]
        if ins["doc"] not in docs:
            raise InputError(
                f"document {ins['doc']} of trap {owner.id} is not in the given documents"
            )
        text, offset = docs[ins["doc"]], ins["char_offset"]
        ctx = text[max(0, offset - chars) : offset]
        cut = ctx.find("\n")
        out.append(ctx[cut + 1 :] if offset - chars > 0 and cut >= 0 else ctx)
    return out


def conditional_logp(
    model, texts: list[str], contexts: list[str], *, cache_root=None
) -> np.ndarray:
    """Mean log-probability of each text's tokens given its context (the text alone where the
    context is empty).

    ``context + text`` is tokenized once, with character offsets, and scored once; the text's
    tokens are those whose characters lie inside the text's span (whitespace of the context
    that a token takes along, as byte-level BPE does with the space before a word, is
    ignored). Subtracting the scores of the context alone would be wrong whenever
    ``tokenize(context)`` is not a prefix of ``tokenize(context + text)``, which is the rule
    for a text that starts a word.

    Raises
    ------
    InputError
        The model's tokenizer gives no character offsets (not a fast tokenizer).
    """
    whole = [c + t for c, t in zip(contexts, texts)]
    ids, offsets = _encode_with_offsets(model, whole)
    scores, _ = score_texts(model, whole, token_ids=ids, cache_root=cache_root)
    out = np.empty(len(texts))
    for i, (c, w) in enumerate(zip(contexts, whole)):
        inside = token_mask(w, offsets[i], len(c), len(w))[1:]  # (n-1,) the first is unscored
        logp = scores.text(i).logp[inside]
        out[i] = logp.mean(dtype=np.float64) if len(logp) else np.nan
    return out


def _encode_with_offsets(model, texts: list[str]) -> tuple[list[list[int]], list[list]]:
    """Token ids (as ``model.encode`` gives them) and each token's (start, end) characters."""
    enc = _require_offsets(model)(list(texts), return_offsets_mapping=True, verbose=False)
    return enc["input_ids"], enc["offset_mapping"]


def _require_offsets(model):
    """The model's tokenizer, when it gives character offsets (a fast tokenizer)."""
    if not getattr(model.tokenizer, "is_fast", False):
        raise InputError(
            f"{model.name}: scoring traps in context needs a fast tokenizer (one that gives "
            "character offsets)"
        )
    return model.tokenizer


def token_mask(text: str, offsets, start: int, end: int) -> np.ndarray:
    """Which tokens lie inside ``text[start:end]``: (n,) bool from (n,) (first, last + 1)
    character offsets.

    Whitespace a token holds outside the span (``" word"`` starting right after the span
    begins, a trailing line break) does not count; tokens without characters (special
    tokens) are outside.
    """
    inside = np.zeros(len(offsets), dtype=bool)
    for k, (s, e) in enumerate(offsets):
        while s < e and s < start and text[s].isspace():
            s += 1
        while e > s and e > end and text[e - 1].isspace():
            e -= 1
        inside[k] = start <= s < e <= end
    return inside


CONTEXT_SCORING = (
    "context + trap tokenized once (character offsets); mean log p of the tokens inside the "
    "trap's characters"
)


def ledger_recipes(traps: list[Canary]) -> dict:
    """How the ledger's traps were made and injected, as the ledger records it (None: not
    recorded, a ledger from before recipes).
    """
    generation: list = []
    injection: list = []
    for t in traps:
        if t.meta.get("recipe") not in generation:
            generation.append(t.meta.get("recipe"))
        if t.meta.get("injection") not in injection:
            injection.append(t.meta.get("injection"))
    return {"generation": generation, "injection": injection}


def run_traps_detect(config: TrapDetectConfig, *, progress=None) -> dict:
    """Score every trap and control with the target and the reference; AUC grids; write the run dir.

    With ``docs`` (the injected corpus) and ``context_chars``, also score each trap given the
    document text before it (``loss+context``, ``reference+context``).
    """
    timings = Timings()
    with timings("prepare"):
        traps = read_ledger(config.ledger)
        if not all(t.template == TRAP for t in traps):
            raise InputError(
                "not a trap ledger (make one with `memaudit traps make`)", path=config.ledger
            )
        if not any(t.member and t.insertions for t in traps):
            raise InputError(
                "no trap in this ledger was injected (use the ledger `memaudit traps inject` "
                "wrote)",
                path=config.ledger,
            )
        options = LoadOptions(dtype=config.dtype, device=config.device)
        target = load_causal_lm(config.model, options)
        ref = load_causal_lm(config.reference, options)
        made_with = {t.meta.get("reference_tokenizer") for t in traps}
        if made_with != {ref.tokenizer_fingerprint}:
            raise InputError(
                "the traps were made with a reference whose tokenizer is "
                f"{', '.join(sorted(map(str, made_with)))}, "
                f"but {config.reference} has tokenizer {ref.tokenizer_fingerprint}: lengths and "
                "perplexity buckets would not match",
                path=config.ledger,
            )
        documents = (
            {r.id: r.text for r in read_texts(config.docs).records}
            if config.context_chars > 0 and config.docs is not None
            else None
        )
        contexts = None
        if documents is not None:
            contexts = trap_contexts(traps, documents, config.context_chars)
            for m in (target, ref):
                _require_offsets(m)
    cache_root = resolve_cache_root(config.cache_dir, config.no_cache)
    n_bootstrap, seed = config.n_bootstrap, config.seed
    run = rs.RunDir.begin(config.out, "traps detect", config)
    with timings("scoring"):
        texts = [t.text for t in traps]
        views, stats = score_views(
            target,
            ref,
            texts,
            ScoreSettings(),
            lowercase=False,
            cache_root=cache_root,
            progress=progress,
        )
        scores = {s.column: s(views) for s in parse_attacks(DETECT_ATTACKS)}
        if contexts is not None:
            target_ctx = conditional_logp(target, texts, contexts, cache_root=cache_root)
            scores["loss+context"] = target_ctx
            scores["reference+context"] = target_ctx - conditional_logp(
                ref, texts, contexts, cache_root=cache_root
            )
    with timings("grids"):
        grid = detection_grid(traps, scores, n_bootstrap=n_bootstrap, seed=seed)
        pooled = pooled_grid(traps, scores, n_bootstrap=n_bootstrap, seed=seed)
        chance = controls_at_chance(traps, scores, n_bootstrap=n_bootstrap, seed=seed)
    columns = {
        "id": [t.id for t in traps],
        "member": [t.member for t in traps],
        "length": [t.meta["length"] for t in traps],
        "bucket": [t.meta["bucket"] for t in traps],
        "perplexity": [t.meta["perplexity"] for t in traps],
        "repetitions": [t.level for t in traps],
        **{k: v.tolist() for k, v in scores.items()},
    }
    run.write_scores(columns)
    results = {
        **run.header({"target": target, "reference": ref}),
        "attacks": list(scores),
        **ledger_recipes(traps),
        "context_scoring": CONTEXT_SCORING if contexts is not None else None,
        "grid": grid,
        "pooled_grid": pooled,
        "controls_vs_controls": chance,
        "scoring": {m: s.__dict__ for m, s in stats.items()},
        "timings_s": timings.seconds,
    }
    render = None
    if config.report:
        from memaudit.report import write_traps_report

        render = write_traps_report
    run.finish(results, render)
    return results
