"""The first tokens of long texts, without tokenizing the rest.

A command that needs only a text's first ``n`` tokens (``extract``: the prefix + suffix
window; ``mia --max-tokens-per-text``) should not pay for tokenizing, let alone scoring, a
10 MB line. A tokenizer's output near the end of a cut text can differ from its output on
the whole text (a word cut in two, a merge across the cut, an end-of-text token), but tokens
well before the cut do not depend on what follows. So each text is tokenized on a character
head ``text[:c]`` and on ``text[:2c]``; when both agree on their first ``n + 1`` tokens,
those ``n`` are taken as the text's own. Otherwise ``c`` doubles, up to the whole text, which
is then tokenized as usual: the result is never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CHARS_PER_TOKEN = 8  # a first head generous for BPE on prose and code (about 3-5 chars/token)
MIN_CHARS = 256


def head_ids(model: Any, texts: Sequence[str], n_tokens: int) -> list[list[int]]:
    """The first ``n_tokens`` ids of each text, equal to ``model.encode([text])[0][:n_tokens]``.

    Parameters
    ----------
    model : CausalLM
        Anything with ``encode(texts) -> list of id lists``.
    texts : sequence of str
    n_tokens : int
        Ids wanted per text (at least 1).

    Examples
    --------
    >>> class Chars:  # one token per character
    ...     def encode(self, texts):
    ...         return [[ord(c) for c in t] for t in texts]
    >>> head_ids(Chars(), ["abc", "x" * 10_000], 2)
    [[97, 98], [120, 120]]
    """
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    out: list[list[int] | None] = [None] * len(texts)
    chars = max(MIN_CHARS, CHARS_PER_TOKEN * (n_tokens + 1))
    pending = list(range(len(texts)))
    while pending:
        whole = [i for i in pending if len(texts[i]) <= 2 * chars]
        for i, ids in zip(whole, _encode(model, [texts[i] for i in whole])):
            out[i] = list(ids[:n_tokens])
        cut = [i for i in pending if len(texts[i]) > 2 * chars]
        short = _encode(model, [texts[i][:chars] for i in cut])
        longer = _encode(model, [texts[i][: 2 * chars] for i in cut])
        pending = []
        for i, a, b in zip(cut, short, longer):
            if len(a) > n_tokens and list(a[: n_tokens + 1]) == list(b[: n_tokens + 1]):
                out[i] = list(a[:n_tokens])
            else:
                pending.append(i)
        chars *= 2
    return [ids if ids is not None else [] for ids in out]


def _encode(model: Any, texts: list[str]) -> list[list[int]]:
    return model.encode(texts) if texts else []  # some tokenizers fail on an empty batch


def text_heads(model: Any, texts: Sequence[str], n_tokens: int) -> tuple[list[str], list[bool]]:
    """Each text cut after the last character of its ``n_tokens``-th token, and whether it was
    cut (a text of at most ``n_tokens`` tokens is returned whole).

    The cut text is what every later step sees (every attack, every reference model), so a
    run stays one consistent set of texts. Its own tokenization is the first ``n_tokens``
    ids of the whole text, except possibly the last token, when the cut splits a word that
    the tokenizer merged across it.

    Needs a fast tokenizer (``model.tokenizer``, with character offsets).

    Examples
    --------
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import PreTrainedTokenizerFast
    >>> tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> class Words:
    ...     tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok)
    ...     def encode(self, texts):
    ...         return self.tokenizer(list(texts))["input_ids"]
    >>> text_heads(Words(), ["a b", "a b a b a"], 2)
    (['a b', 'a b'], [False, True])
    """
    ids = head_ids(model, texts, n_tokens + 1)  # one more tells a text that is longer
    long = [i for i, t in enumerate(ids) if len(t) > n_tokens]
    out, cut = list(texts), [False] * len(texts)
    tokenizer = model.tokenizer
    # the model's encoding may add (or strip) a BOS before the tokenizer's own: offsets are
    # the tokenizer's, so count its tokens
    shift = len(model.encode(["a"])[0]) - len(tokenizer("a", verbose=False)["input_ids"])
    for i in long:
        head = _chars_covering(tokenizer, texts[i], max(1, n_tokens - shift))
        if head < len(texts[i]):
            out[i], cut[i] = texts[i][:head], True
    return out, cut


def _chars_covering(tokenizer: Any, text: str, n_tokens: int) -> int:
    """Characters of ``text`` that the tokenizer's first ``n_tokens`` tokens cover (found as
    :func:`head_ids` finds ids: two heads must agree)."""
    chars = max(MIN_CHARS, CHARS_PER_TOKEN * (n_tokens + 1))
    while True:
        a = tokenizer(text[:chars], return_offsets_mapping=True, verbose=False)
        b = tokenizer(text[: 2 * chars], verbose=False)["input_ids"]
        agree = (
            len(a["input_ids"]) > n_tokens and a["input_ids"][: n_tokens + 1] == b[: n_tokens + 1]
        )
        if agree or 2 * chars >= len(text):
            if not agree:
                a = tokenizer(text, return_offsets_mapping=True, verbose=False)
            return max(end for _, end in a["offset_mapping"][:n_tokens])
        chars *= 2
