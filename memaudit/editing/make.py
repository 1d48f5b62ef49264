"""Inputs of the editing experiments: a synthetic fact set to train a model on and edit, and
edits that overwrite the demo's planted secrets with a placeholder.

``memaudit edit-facts`` writes a folder: ``train.txt`` (every fact sentence, ``--copies``
times, shuffled; one line per sentence, the corpus of ``memaudit train``), ``facts.jsonl``
(subject, relation, answer), ``edits.jsonl`` (the first ``--edits`` facts, each to another
answer of its relation) and ``controls.jsonl`` (edits of the next ``--controls`` facts, never
applied: the non-members of the membership test), ``general.txt`` (the sentences of every fact
not edited: the fluency text of ``edit-eval --general``; a fact model has never seen code, so
its NLL on stdlib source says nothing).

``memaudit edit-secrets`` turns a forget set (``memaudit canaries split``) into edits: the
prompt is the canary's prefix, the old target its secret, the new one a placeholder of the
same form (digits and hex digits as ``0``, words as ``redacted``), so greedy decoding after
the prefix gives the placeholder where it gave the secret. With ``--model`` both targets are
cut to their first token in that model's tokenizer: an edit at the prompt's last token changes
the next token's prediction and barely the ones after it (measured on the demo model: the
first token's NLL 7.9 -> 0.8, the next ones unmoved), and a different first token is what
keeps greedy decoding off the secret.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from memaudit.errors import InputError
from memaudit.io.atomic import write_text_atomic
from memaudit.io.outdir import prepare_out_dir
from memaudit.io.texts import read_texts

from .config import EditFactsConfig, EditSecretsConfig
from .facts import RELATIONS, edit_request, fact_text, make_facts

KIND = "run:edit-facts"
NEIGHBOURS = 3  # neighbourhood prompts per edit


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_fact_set(config: EditFactsConfig) -> dict[str, int]:
    """The folder of the module docstring; returns how many lines each file holds."""
    n_facts = config.subjects * len(RELATIONS)
    if config.edits + config.controls > n_facts:
        raise InputError(
            f"--edits {config.edits} + --controls {config.controls} need that many facts; "
            f"--subjects {config.subjects} give {n_facts} ({len(RELATIONS)} relations each)"
        )
    if config.subjects < NEIGHBOURS + 1:
        raise InputError(
            f"--subjects must be at least {NEIGHBOURS + 1}: each edit takes {NEIGHBOURS} other "
            "subjects as its neighbourhood"
        )
    facts = make_facts(config.subjects, seed=config.seed)
    order = random.Random(config.seed).sample(facts, len(facts))  # edits mix subjects/relations
    edits = [
        edit_request(f, facts, seed=config.seed, neighbours=NEIGHBOURS)
        for f in order[: config.edits]
    ]
    controls = [
        edit_request(f, facts, seed=config.seed, neighbours=NEIGHBOURS)
        for f in order[config.edits : config.edits + config.controls]
    ]
    rng = random.Random(config.seed + 1)
    sentences = [fact_text(f) for f in facts]
    unedited = [fact_text(f) for f in order[config.edits :]]
    lines = [s for _ in range(config.copies) for s in rng.sample(sentences, len(sentences))]
    out = prepare_out_dir(config.out, kind=KIND, overwrite=config.overwrite)
    facts_rows = [{"subject": f.subject, "relation": f.relation, "answer": f.answer} for f in facts]
    files = {
        "facts.jsonl": _jsonl(facts_rows),
        "edits.jsonl": _jsonl(edits),
        "controls.jsonl": _jsonl(controls),
        "general.txt": "".join(t + "\n" for t in unedited),
        "train.txt": "\n".join(lines) + "\n",  # last: its presence means the set is whole
    }
    for name, text in files.items():
        write_text_atomic(out / name, text)
    return {"facts": len(facts), "edits": len(edits), "controls": len(controls),
            "lines": len(lines)}  # fmt: skip


WORD = re.compile(r"[A-Za-z]{3,}")
HEXISH = re.compile(r"[0-9a-f]")


def placeholder(secret: str, *, digit: str = "0", word: str = "redacted") -> str:
    """The secret's form with nothing of it left: words as ``redacted``, then every remaining
    digit or lowercase hex digit as ``0``.

    >>> placeholder('3f9a1c07"'), placeholder("4411 0923 1187 5530"), placeholder("oak lamp fox")
    ('00000000"', '0000 0000 0000 0000', 'redacted redacted redacted')
    """
    if not re.fullmatch(r'[0-9a-f"]+', secret):
        replaced = WORD.sub(word, secret)
        if replaced != secret:
            return replaced
    return HEXISH.sub(digit, secret)


def first_token(tokenizer, prompt: str, target: str) -> str:
    """The text of ``target``'s first token as it follows ``prompt`` (with the next ones while
    it is only whitespace, e.g. a lone space before digits)."""
    text = prompt + target
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    spans = [(s, e) for s, e in enc["offset_mapping"] if e > len(prompt)]
    if spans[0][0] < len(prompt):
        raise InputError(f"prompt {prompt!r} and target {target!r} merge into one token")
    for _, end in spans:
        if text[len(prompt) : end].strip():
            return text[len(prompt) : end]
    return target


def secret_edits(config: EditSecretsConfig) -> list[dict]:
    """One edit per text of ``--forget`` (which needs its ``prefix``)."""
    tokenizer = None
    if config.model:
        from memaudit.models.hf import load_tokenizer

        tokenizer = load_tokenizer(config.model)
    rows = []
    for r in read_texts(config.forget).records:
        prefix = r.meta.get("prefix")
        if not isinstance(prefix, str) or not prefix or not r.text.startswith(prefix):
            raise InputError(
                "no 'prefix' field that starts the text (`memaudit canaries split` writes one)",
                path=r.path,
                line=r.line,
            )
        secret = r.text[len(prefix) :]
        new = config.placeholder or placeholder(secret)
        if not secret.strip() or new == secret:
            raise InputError("nothing after the prefix to replace", path=r.path, line=r.line)
        # a prefix's trailing space goes with the target, as a BPE tokenizer splits the text
        prompt = prefix.rstrip()
        space = prefix[len(prompt) :]
        old, new = space + secret, space + new
        if tokenizer is not None:
            try:
                old, new = first_token(tokenizer, prompt, old), first_token(tokenizer, prompt, new)
                if old == new and not config.placeholder:  # e.g. a secret that starts with 0
                    other = placeholder(secret, digit="1", word="hidden")
                    new = first_token(tokenizer, prompt, space + other)
            except InputError as err:
                raise InputError(err.reason, path=r.path, line=r.line) from None
            if old == new:
                raise InputError(
                    f"the placeholder starts with the secret's first token {old!r}",
                    path=r.path, line=r.line,
                )  # fmt: skip
        rows.append(
            {
                "id": r.id,
                "subject": prompt,  # the key at the prompt's last token: the one that predicts
                "prompt": prompt,  # the secret's first token
                "target_new": new,
                "target_true": old,
            }
        )
    if not rows:
        raise InputError("no texts", path=config.forget)
    return rows


def write_secret_edits(config: EditSecretsConfig) -> int:
    if Path(config.out).resolve() == Path(config.forget).resolve():
        raise InputError("--out is the --forget file itself; choose another", path=config.out)
    if Path(config.out).exists() and not config.overwrite:
        raise InputError("exists; give --overwrite to replace it", path=config.out)
    rows = secret_edits(config)  # reads the forget set and, with --model, loads the model
    write_text_atomic(config.out, _jsonl(rows))
    return len(rows)
