"""The expensive attacks: each needs many target passes per text, so each is opt-in.

- ``samia`` (Kaneko et al. 2024): sampled continuations of a prefix against the true suffix.
- ``neighbourhood`` (Mattern et al. 2023): the text's loss against its word-level neighbours',
  the neighbours made by a local masked LM.
- ``gradnorm`` (as in MIMIR, Duan et al. 2024): the norm of the loss's gradient with respect
  to the target's parameters.

Each has a view that does the expensive work once (generation, neighbour scoring, backward
passes); the attacks themselves are pure functions over it. ``--attacks all`` leaves them out;
name them to run them.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.scoring.engine import ScoreStats, score_texts

from .base import GRAD_NORMS, AttackInputs, PerText, mean_logp, register, register_view

if TYPE_CHECKING:
    from .views import ViewContext

# ---- samia -------------------------------------------------------------------------------


def _samia_settings(ctx: ViewContext) -> dict[str, Any]:
    s = {
        "samples": ctx.option("samia_samples"),
        "share": ctx.option("samia_prefix_share"),
        "temperature": ctx.option("samia_temperature"),
        "top_k": ctx.option("samia_top_k"),
        "ngram": ctx.option("samia_ngram"),
        "seed": ctx.option("attack_seed"),
    }
    if not 0 < s["share"] < 1:
        raise InputError(f"--samia-prefix-share must be in (0, 1), got {s['share']:g}")
    if s["temperature"] <= 0:
        raise InputError(f"--samia-temperature must be > 0, got {s['temperature']:g}")
    if s["samples"] < 1 or s["top_k"] < 0 or s["ngram"] < 1:
        raise InputError("--samia-samples and --samia-ngram must be >= 1, --samia-top-k >= 0")
    return s


def split_prefix(ids: Sequence[int], share: float) -> int:
    """How many of ``ids`` form the prefix: ``round(share * n)``, at least 1 and at most n - 1."""
    return min(len(ids) - 1, max(1, round(share * len(ids))))


def rouge_n(candidate: Sequence[str], reference: Sequence[str], n: int) -> float:
    """ROUGE-N recall: the reference's n-grams found in the candidate (clipped counts), over the
    reference's n-grams; NaN for a reference shorter than n words.
    """
    ref = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
    if not ref:
        return float("nan")
    cand = Counter(tuple(candidate[i : i + n]) for i in range(len(candidate) - n + 1))
    return sum((ref & cand).values()) / sum(ref.values())


@register_view(
    "samia",
    description="samia's sampled continuations of each text's prefix, scored by ROUGE-N",
    cost="M sampled continuations per text: M x suffix-length generation steps",
    prepare=_samia_settings,
)
def samia_view(ctx: ViewContext, s: dict[str, Any]) -> tuple[PerText, dict[str, ScoreStats]]:
    from memaudit.models.generation import sample_each

    started = time.perf_counter()
    model: Any = ctx.target  # generation and gradients need the transformers adapter
    m = s["samples"]
    ids = [list(t)[: model.max_length] for t in (ctx.token_ids or model.encode(ctx.texts))]
    rouge = np.full((len(ids), m), np.nan)
    zlib_bytes = np.full((len(ids), m), np.nan)
    # texts of similar suffix length share a batch: each batch generates its longest suffix
    usable = [i for i, t in enumerate(ids) if len(t) >= 2]
    cut = {i: split_prefix(ids[i], s["share"]) for i in usable}
    order = sorted(usable, key=lambda i: (len(ids[i]) - cut[i], i))
    per_batch = max(1, ctx.settings.max_batch_size // m)
    steps = 0
    for start in range(0, len(order), per_batch):
        chunk = order[start : start + per_batch]
        longest = max(len(ids[i]) - cut[i] for i in chunk)
        samples = sample_each(
            model,
            [ids[i][: cut[i]] for i in chunk],
            m,
            longest,
            temperature=s["temperature"],
            top_k=s["top_k"],
            seed=s["seed"],
            batch_size=len(chunk) * m,
        )
        steps += longest
        for i, rows in zip(chunk, samples):
            suffix = ids[i][cut[i] :]
            reference = _decode(model, suffix).split()
            for j, row in enumerate(rows):
                text = _decode(model, row[: len(suffix)])
                rouge[i, j] = rouge_n(text.split(), reference, s["ngram"])
                zlib_bytes[i, j] = len(zlib.compress(text.encode("utf-8")))
        if ctx.progress is not None:
            ctx.progress("sampling (samia)", min(start + per_batch, len(order)), len(order))
    stats = ScoreStats(
        texts=len(ids),
        unique_texts=len(ids),
        forward_passes=steps,
        tokens_scored=sum(m * (len(ids[i]) - cut[i]) for i in usable),
        seconds=time.perf_counter() - started,
    )
    return PerText(rouge=rouge, zlib=zlib_bytes), {"target": stats}


def _decode(model: Any, ids: Sequence[int]) -> str:
    return model.tokenizer.decode(list(ids), skip_special_tokens=True)


@register(
    "samia",
    description=(
        "mean ROUGE-N recall of the true suffix by continuations sampled from the prefix; "
        "zlib=1: each times its zlib-compressed bytes (Kaneko et al. 2024)"
    ),
    needs=("samia",),
    cost="--samia-samples x suffix-length generation steps per text (batched)",
    opt_in=True,
    zlib=0.0,
)
def samia(inputs: AttackInputs, *, zlib: float) -> np.ndarray:
    view = inputs.view("samia")
    per_sample = view["rouge"] * (view["zlib"] if zlib else 1.0)  # (N, M)
    with np.errstate(invalid="ignore"):
        return np.nanmean(per_sample, axis=1) if per_sample.size else np.zeros(len(per_sample))


# ---- neighbourhood ---------------------------------------------------------------------------

CANDIDATES_PER_WORD = 5  # the authors' code takes the MLM's top 6 tokens, one being the word
MLM_BATCH_TOKENS = 4096  # (rows x length) per masked-LM forward


@dataclass
class MaskedLM:
    model: Any
    tokenizer: Any
    limit: int  # tokens the MLM takes
    words: list[str | None]  # per vocabulary id: the word it stands for, None if it is none
    k: int
    dropout: float
    seed: int


def _load_neighbour_model(ctx: ViewContext) -> MaskedLM:
    from memaudit.models.hf import LoadOptions, load_masked_lm

    k, dropout = ctx.option("neighbours"), ctx.option("neighbour_dropout")
    if k < 1:
        raise InputError(f"--neighbours must be >= 1, got {k}")
    if not 0 <= dropout < 1:
        raise InputError(f"--neighbour-dropout must be in [0, 1), got {dropout:g}")
    options = LoadOptions(
        dtype=ctx.option("dtype"),
        device=ctx.option("device"),
        trust_remote_code=ctx.option("trust_remote_code"),
    )
    model, tok = load_masked_lm(ctx.option("neighbour_model"), options)
    limit = min(tok.model_max_length, getattr(model.config, "max_position_embeddings", 512))
    if "roberta" in model.config.model_type:  # its positions start after the padding id
        limit -= 2
    return MaskedLM(
        model, tok, limit, _vocabulary_words(tok), k, dropout, ctx.option("attack_seed")
    )


def _vocabulary_words(tok: Any) -> list[str | None]:
    """The whole word each vocabulary token writes, or None (special tokens, word pieces that
    continue a word, whitespace).
    """
    special = set(tok.all_special_ids)
    prefix = getattr(tok, "wordpieces_prefix", None) or "##"
    out: list[str | None] = []
    for i, token in enumerate(tok.convert_ids_to_tokens(list(range(len(tok))))):
        word = tok.convert_tokens_to_string([token]).strip() if token is not None else ""
        whole = word and i not in special and not token.startswith(prefix)
        out.append(word if whole and not any(c.isspace() for c in word) else None)
    return out


def neighbours_of(mlm: MaskedLM, text: str) -> list[str]:
    """The text's ``mlm.k`` neighbours: each replaces one word by a candidate of the masked LM.

    Every word that is one MLM token is a replacement site. At each site the MLM reads the text
    with dropout (``mlm.dropout``, seeded per text) on that word's input embedding, not a mask,
    so it still sees the word partly (Mattern et al. 2023); its top candidates that are other
    whole words are scored ``p(candidate) / (1 - p(word))`` and the ``k`` best over all sites
    are the neighbours, in score order. A text with fewer candidates has fewer neighbours.
    """
    tok, model = mlm.tokenizer, mlm.model
    enc = tok(text, return_offsets_mapping=True, truncation=True, max_length=mlm.limit)
    ids, offsets, words = enc["input_ids"], enc["offset_mapping"], enc.word_ids()
    tokens_of_word = Counter(w for w in words if w is not None)
    sites = [
        i
        for i, w in enumerate(words)
        if w is not None and tokens_of_word[w] == 1 and offsets[i][1] > offsets[i][0]
    ]
    if not sites:
        return []
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)  # (1, L)
    embeds = model.get_input_embeddings()(x)  # (1, L, D)
    gen = torch.Generator(device="cpu").manual_seed(_text_seed(mlm.seed, text))
    keep = torch.rand(len(sites), embeds.shape[-1], generator=gen) >= mlm.dropout  # (S, D)
    scale = keep.to(embeds.dtype).to(device) / (1 - mlm.dropout)
    valid = torch.tensor([w is not None for w in mlm.words], device=device)  # (V,)
    found: list[tuple[float, int, int]] = []  # (score, site, candidate id)
    rows = max(1, MLM_BATCH_TOKENS // len(ids))
    with torch.no_grad():
        for start in range(0, len(sites), rows):
            chunk = sites[start : start + rows]
            batch = embeds.repeat(len(chunk), 1, 1)  # (B, L, D)
            r = torch.arange(len(chunk), device=device)
            pos = torch.tensor(chunk, device=device)
            batch[r, pos] = batch[r, pos] * scale[start : start + len(chunk)]
            logits = model(inputs_embeds=batch).logits[r, pos].float()  # (B, V)
            probs = torch.softmax(logits, dim=-1)
            original = probs[r, x[0, pos]]  # (B,)
            masked = probs.masked_fill(~valid[: probs.shape[-1]], -1.0)
            masked[r, x[0, pos]] = -1.0
            top_p, top_id = masked.topk(CANDIDATES_PER_WORD, dim=-1)  # (B, C)
            # the authors' code: a word the MLM is sure of divides by 0.1, not 0
            denom = torch.where(original >= 1, torch.full_like(original, 0.1), 1 - original)
            for b, site in enumerate(chunk):
                for p, c in zip(top_p[b].tolist(), top_id[b].tolist()):
                    if p >= 0:
                        found.append((p / float(denom[b]), site, c))
    found.sort(key=lambda f: (-f[0], f[1], f[2]))
    out = []
    for _, site, cand in found[: mlm.k]:
        a, b = offsets[site]
        out.append(text[:a] + str(mlm.words[cand]) + text[b:])
    return out


def _text_seed(seed: int, text: str) -> int:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


@register_view(
    "neighbourhood",
    description="target log-likelihoods of K word-level neighbours of each text",
    cost="1 masked-LM pass per word + K target passes per text",
    requires=("neighbour_model",),
    prepare=_load_neighbour_model,
)
def neighbourhood_view(ctx: ViewContext, mlm: MaskedLM) -> tuple[PerText, dict[str, ScoreStats]]:
    started = time.perf_counter()
    owner, texts = [], []
    for i, text in enumerate(ctx.texts):
        found = neighbours_of(mlm, text)
        owner += [i] * len(found)
        texts += found
        if ctx.progress is not None:
            ctx.progress("neighbours (masked LM)", i + 1, len(ctx.texts))
    mlm_seconds = time.perf_counter() - started
    # every neighbour of every text in one call: full batches, and the cache
    scores, stats = score_texts(
        ctx.target,
        texts,
        ctx.settings,
        cache_root=ctx.cache_root,
        progress=ctx.progress,
        stage="scoring neighbours",
    )
    values = np.full((len(ctx.texts), mlm.k), np.nan)  # (N, K)
    slot = Counter[int]()
    for i, v in zip(owner, mean_logp(scores)):
        values[i, slot[i]] = v
        slot[i] += 1
    mlm_stats = ScoreStats(texts=len(ctx.texts), seconds=mlm_seconds)
    return PerText(logp=values), {"target": stats, "masked_lm": mlm_stats}


@register(
    "neighbourhood",
    description=(
        "mean log-likelihood of the text minus the mean over its word-level neighbours "
        "(masked-LM replacements), i.e. their mean loss minus its loss (Mattern et al. 2023)"
    ),
    needs=("neighbourhood",),
    cost="+K target passes per text (--neighbours) and a masked-LM pass per word",
    opt_in=True,
)
def neighbourhood(inputs: AttackInputs) -> np.ndarray:
    logp = inputs.view("neighbourhood")["logp"]  # (N, K), NaN where a text has fewer
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(logp, axis=1) if logp.shape[1] else np.full(len(logp), np.nan)
    return mean_logp(inputs.target) - mean


# ---- gradnorm ----------------------------------------------------------------------------------


@register_view(
    "gradnorm",
    description="the norms of the loss's gradient with respect to the target's parameters",
    cost="1 forward + 1 backward target pass per text (one text at a time)",
)
def gradnorm_view(ctx: ViewContext, state: None) -> tuple[PerText, dict[str, ScoreStats]]:
    started = time.perf_counter()
    model: Any = ctx.target  # the transformers adapter: its module takes gradients
    ids = [list(t)[: model.max_length] for t in (ctx.token_ids or model.encode(ctx.texts))]
    norms = np.full((len(ids), len(GRAD_NORMS)), np.nan)
    params = list(model.model.parameters())
    frozen = [p for p in params if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        for i, t in enumerate(ids):
            if len(t) >= 2:
                norms[i] = _grad_norms(model, t, params)
            if ctx.progress is not None:
                ctx.progress("gradients (gradnorm)", i + 1, len(ids))
    finally:
        for p in frozen:
            p.requires_grad_(False)
    stats = ScoreStats(
        texts=len(ids),
        unique_texts=len(ids),
        forward_passes=sum(len(t) >= 2 for t in ids),
        windows=len(ids),
        tokens_scored=sum(max(0, len(t) - 1) for t in ids),
        seconds=time.perf_counter() - started,
    )
    columns = {f"norm_{p:g}": norms[:, j] for j, p in enumerate(GRAD_NORMS)}
    return PerText(**columns), {"target": stats}


def _grad_norms(model: Any, ids: list[int], params: list[torch.nn.Parameter]) -> list[float]:
    """Mean over parameter tensors of each tensor's gradient p-norm, for every p of GRAD_NORMS
    (MIMIR's statistic), of the text's mean NLL.
    """
    x = torch.tensor([ids], device=model.device)  # (1, T)
    with torch.enable_grad():
        logits = model.model(input_ids=x).logits[0, :-1].float()  # (T-1, V)
        logp = torch.log_softmax(logits, dim=-1).gather(1, x[0, 1:, None])  # (T-1, 1)
        grads = torch.autograd.grad(-logp.mean(), params, allow_unused=True)
    present = [g.float() for g in grads if g is not None]
    return [float(torch.stack([g.norm(p) for g in present]).mean()) for p in GRAD_NORMS]


@register(
    "gradnorm",
    description=(
        "minus the mean over parameter tensors of the p-norm of the loss's gradient "
        "(p = 1, 2 or inf; as in MIMIR)"
    ),
    needs=("gradnorm",),
    cost="+1 forward and 1 backward target pass per text, unbatched",
    opt_in=True,
    p=float("inf"),
)
def gradnorm(inputs: AttackInputs, *, p: float) -> np.ndarray:
    # a member sits near a minimum of the training loss: a small gradient
    return -inputs.view("gradnorm")[f"norm_{p:g}"]
