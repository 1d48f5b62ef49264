"""Edit requests: read from JSONL, checked at the edge, and laid out as tokens.

One line per edit::

    {"id": "e1", "subject": "Zorblax", "prompt": "The capital of Zorblax is",
     "target_new": " Quimby", "target_true": " Plenk",
     "paraphrases": ["Zorblax's capital city is"],
     "neighbourhood": ["The capital of Vantoria is"]}

``prompt`` holds the subject itself (or ``{}`` where it goes); ``target_new`` is what the model
should say next. ``target_true`` (the old answer), ``paraphrases`` (other prompts that should
now give the new target) and ``neighbourhood`` (prompts about other subjects, whose answers
must not move) are optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memaudit.errors import InputError
from memaudit.io.texts import jsonl_objects


@dataclass(frozen=True)
class EditRequest:
    id: str
    subject: str
    prompt: str
    target_new: str
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()
    neighbourhood: tuple[str, ...] = ()
    line: int | None = None  # in the edits file, for errors


def read_edits(path: str | Path) -> list[EditRequest]:
    """The edits of a JSONL file; a bad line is one ``file:line`` error, an empty file too."""
    edits: list[EditRequest] = []
    first_line: dict[str, int] = {}
    for lineno, obj in jsonl_objects(path, what="edits"):
        e = _request(obj, str(path), lineno)
        if e.id in first_line:
            raise InputError(
                f"edit id '{e.id}' was already used on line {first_line[e.id]}",
                path=str(path),
                line=lineno,
            )
        first_line[e.id] = lineno
        edits.append(e)
    if not edits:
        raise InputError("no edits in the file", path=str(path))
    return edits


def _request(obj: dict[str, Any], path: str, line: int) -> EditRequest:
    def optional(name: str) -> str | None:
        value = obj.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InputError(f"'{name}' must be a non-empty string", path=path, line=line)
        return value

    def required(name: str) -> str:
        value = optional(name)
        if value is None:
            raise InputError(f"no '{name}' field", path=path, line=line)
        return value

    def texts(name: str) -> tuple[str, ...]:
        value = obj.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise InputError(f"'{name}' must be a list of strings", path=path, line=line)
        return tuple(value)

    subject = required("subject")
    prompt = required("prompt").replace("{}", subject)
    if subject not in prompt:
        raise InputError(f"the subject '{subject}' is not in the prompt", path=path, line=line)
    return EditRequest(
        id=str(obj.get("id", f"line-{line}")),
        subject=subject,
        prompt=prompt,
        target_new=required("target_new"),
        target_true=optional("target_true"),
        paraphrases=tuple(p.replace("{}", subject) for p in texts("paraphrases")),
        neighbourhood=texts("neighbourhood"),
        line=line,
    )


@dataclass(frozen=True)
class Encoded:
    """A prompt followed by a target, as token ids.

    ``subject_last`` is the position of the subject's last token (where the edit reads its key),
    ``target_start`` the first target token's position (the prompt is ``ids[:target_start]``).
    """

    ids: list[int]
    subject_last: int
    target_start: int


def encode(tokenizer, prompt: str, target: str, subject: str | None = None) -> Encoded:
    """Tokenize ``prompt + target`` once and find the subject's last token and the target's
    first by character offsets (a fast tokenizer's ``offset_mapping``)."""
    text = prompt + target
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    content = [i for i, (s, e) in enumerate(offsets) if e > s]  # BOS and the like have (0, 0)
    if any(offsets[i][0] < len(prompt) < offsets[i][1] for i in content):
        raise InputError(f"prompt {prompt!r} and target {target!r} merge into one token")
    target_start = next(i for i in content if offsets[i][0] >= len(prompt))
    subject_last = target_start - 1
    if subject is not None:
        end = prompt.rindex(subject) + len(subject)
        subject_last = max(i for i in content if offsets[i][0] < end)
    return Encoded(ids, subject_last, target_start)


def encode_edits(tokenizer, edits: list[EditRequest], *, key_at: str, path: str) -> list[Encoded]:
    """Each edit's prompt + new target, its key read at the subject's last token
    (``key_at="subject"``) or at the prompt's last token (``"last"``); an edit whose prompt and
    target merge into one token is one error naming the edit."""
    out = []
    for e in edits:
        subject = e.subject if key_at == "subject" else None
        try:
            out.append(encode(tokenizer, e.prompt, e.target_new, subject))
        except InputError as err:
            raise InputError(f"edit '{e.id}': {err.reason}", path=path, line=e.line) from None
    return out
