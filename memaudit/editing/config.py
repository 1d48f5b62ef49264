"""Settings of ``memaudit edit``. Light: no torch, so ``--help`` starts fast."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from memaudit.errors import InputError
from memaudit.io.config import overwrite_setting, setting
from memaudit.registry import Registry

EDIT_METHODS = ("rome", "memit", "emmet")


def parse_layers(text: str) -> tuple[int, ...]:
    """'auto' as (); '1' or '0,1' or '0-2' as the block indices."""
    text = text.strip()
    if text == "auto":
        return ()
    out: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise InputError(f"--layers: '{part}' is not a block index or range (e.g. 1 or 0-2)")
        out.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    return tuple(dict.fromkeys(out))


def parse_sizes(text: str) -> tuple[int, ...]:
    """'1,4,16' as (1, 4, 16): positive, each once."""
    out = []
    for part in text.split(","):
        if not part.strip().isdigit() or int(part) < 1:
            raise InputError(f"--batch-sizes: '{part.strip()}' is not a positive whole number")
        out.append(int(part))
    return tuple(dict.fromkeys(out))


def parse_methods(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names:
        raise InputError("--methods is empty")
    for name in names:
        check_method(name, flag="--methods")
    return names


def check_method(name: str, *, flag: str = "--method") -> None:
    methods: Registry[str] = Registry(f"edit method ({flag})")
    for m in EDIT_METHODS:
        methods.add(m, m)
    methods.get(name)  # unknown: "did you mean"


KEY_POSITIONS = ("subject", "last")


# Settings shared by `edit` and `edit-sweep` (one definition, two config classes)
def _key_at():
    return setting(
        "subject",
        help="Where the edit's key is read: 'subject' (its last token, ROME/MEMIT's choice from "
        "causal tracing in large models) or 'last' (the prompt's last token; on the 2-block "
        "fact model of docs/editing.md only this one reaches the answer).",
    )


def check_key_at(value: str) -> None:
    if value not in KEY_POSITIONS:
        raise InputError(f"--key-at must be one of {', '.join(KEY_POSITIONS)}, got '{value}'")


def _covariance_corpus():
    return setting(
        "stdlib",
        help="Text whose MLP keys are preserved: 'stdlib', a folder, .jsonl, .txt or .parquet.",
    )


def _covariance_tokens():
    return setting(
        20_000, minimum=1, help="Tokens of --covariance-corpus the key statistics are taken over."
    )


def _preservation_weight():
    return setting(
        10.0,
        help="memit/emmet: weight of the preserved keys, C = weight * E[k k^T] (MEMIT's "
        "mom2_update_weight, 15000 for GPT-J; on a 2-layer 64-wide fact model 15000 left every "
        "edit undone and 10 made them all take).",
    )


def _emmet_ridge():
    return setting(0.1, help="emmet: ridge on K^T C^-1 K for a batch (emmet_lambda).")


def _cache_dir():
    return setting(
        None,
        help="Cache root of the key statistics.",
        default_text="$MEMAUDIT_CACHE or ~/.cache/memaudit",
    )


def _check_positive(config, names: tuple[str, ...], nonnegative: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"--{name.replace('_', '-')} must be a positive number")
    for name in nonnegative:
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"--{name.replace('_', '-')} must be >= 0")


@dataclass(frozen=True)
class EditConfig:
    """Settings of ``memaudit edit``; see ``memaudit edit --help``."""

    model: str = setting(help="Model dir to edit (local, safetensors; never written).")
    edits: str = setting(help="Edits as JSONL: subject, prompt, target_new (docs/editing.md).")
    out: str = setting(help="New model dir to write.")
    overwrite: bool = overwrite_setting()
    method: str = setting(
        "memit", help="rome (one layer, edits one after another), memit or emmet (a batch)."
    )
    layers: tuple[int, ...] = setting(
        (),
        parse=parse_layers,
        default_text="auto: rome the block before the middle, memit/emmet blocks 0..that one",
        help="Blocks whose MLP output projection is rewritten: 1, 0,1 or 0-2.",
    )
    key_at: str = _key_at()
    covariance_corpus: str = _covariance_corpus()
    covariance_tokens: int = _covariance_tokens()
    preservation_weight: float = _preservation_weight()
    emmet_ridge: float = _emmet_ridge()
    v_steps: int = setting(25, minimum=1, help="Gradient steps that find each edit's new output.")
    v_lr: float = setting(0.5, help="Learning rate (Adam) of those steps.")
    v_weight_decay: float = setting(
        0.5, help="Penalty on the change of the output, relative to its norm."
    )
    clamp_norm: float = setting(
        4.0, help="The change of the output is kept within this many times its norm."
    )
    cache_dir: str | None = _cache_dir()
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    seed: int = setting(0, help="Seed of the covariance sample.")

    def __post_init__(self):
        check_method(self.method)
        check_key_at(self.key_at)
        if self.method == "rome" and len(self.layers) > 1:
            raise InputError("rome edits one layer; give one --layers index (memit spreads)")
        _check_positive(
            self, ("preservation_weight", "v_lr", "clamp_norm"), ("emmet_ridge", "v_weight_decay")
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EditEvalConfig:
    """Settings of ``memaudit edit-eval``; see ``memaudit edit-eval --help``."""

    original: str = setting(help="The model dir before editing.")
    edited: tuple[str, ...] = setting(
        help="Edited model dirs (repeat the flag), each measured against --original.",
        repeat=True,
    )
    edits: str = setting(help="The edits that were applied (the JSONL given to `memaudit edit`).")
    controls: str | None = setting(
        None,
        help="Edits of the same form that were never applied: their statements are the "
        "non-members of the membership test (skipped without).",
    )
    general: str = setting(
        "stdlib", help="Text whose NLL change measures fluency: 'stdlib', a folder, .jsonl, .txt."
    )
    general_texts: int = setting(64, minimum=1, help="Texts of --general scored.")
    n_bootstrap: int = setting(1000, minimum=1, help="Bootstrap rounds of the NLL changes' CIs.")
    out: str = setting("runs/edit-eval", help="Run directory.")
    overwrite: bool = overwrite_setting()
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    seed: int = setting(0, help="Seed of the --general sample and the bootstrap.")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EditSweepConfig:
    """Settings of ``memaudit edit-sweep``; see ``memaudit edit-sweep --help``."""

    model: str = setting(help="Model dir to edit (local, safetensors; never written).")
    edits: str = setting(help="Edits as JSONL (at least the largest batch size of them).")
    out: str = setting("runs/edit-sweep", help="Run directory.")
    overwrite: bool = overwrite_setting()
    methods: tuple[str, ...] = setting(
        ("rome", "memit", "emmet"), parse=parse_methods, help="Methods to compare."
    )
    batch_sizes: tuple[int, ...] = setting(
        (1, 4, 16, 64, 256), parse=parse_sizes, help="Edits written at once (rome: in a row)."
    )
    edits_per_size: int = setting(
        64,
        minimum=1,
        help="Edits measured at each batch size: that many / B batches, each from the original "
        "(a batch size above it: one batch). The target search uses `edit`'s defaults.",
    )
    key_at: str = _key_at()
    covariance_corpus: str = _covariance_corpus()
    covariance_tokens: int = _covariance_tokens()
    preservation_weight: float = _preservation_weight()
    emmet_ridge: float = _emmet_ridge()
    general: str = setting(
        "stdlib", help="Text whose NLL change measures fluency: 'stdlib', a folder, .jsonl, .txt."
    )
    general_texts: int = setting(32, minimum=1, help="Texts of --general scored.")
    n_bootstrap: int = setting(1000, minimum=1, help="Bootstrap rounds of the NLL changes' CIs.")
    cache_dir: str | None = _cache_dir()
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    seed: int = setting(0, help="Seed of the covariance and --general samples, the bootstrap.")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        check_key_at(self.key_at)
        if not self.methods:
            raise InputError("--methods is empty")
        for name in self.methods:
            check_method(name, flag="--methods")
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise InputError("--batch-sizes must list positive whole numbers")
        _check_positive(self, ("preservation_weight",), ("emmet_ridge",))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EditFactsConfig:
    """Settings of ``memaudit edit-facts``."""

    out: str = setting("runs/facts", help="Folder to write: train.txt, facts, edits, controls.")
    overwrite: bool = overwrite_setting()
    subjects: int = setting(110, minimum=1, help="Invented subjects, 3 facts (relations) each.")
    edits: int = setting(256, minimum=1, help="Facts turned into edits (edits.jsonl).")
    controls: int = setting(
        64, minimum=0, help="Further facts as never-applied edits (controls.jsonl)."
    )
    copies: int = setting(40, minimum=1, help="Times each fact sentence is in train.txt.")
    seed: int = setting(0, help="Seed of names, answers, edits and the order of train.txt.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EditSecretsConfig:
    """Settings of ``memaudit edit-secrets``."""

    forget: str = setting(
        help="A forget set with each text's prefix (`memaudit canaries split --forget`)."
    )
    out: str = setting("secret-edits.jsonl", help="Edits file to write.")
    overwrite: bool = overwrite_setting()
    model: str | None = setting(
        None,
        help="Model dir whose tokenizer cuts both targets to their first token: an edit at the "
        "prompt's last token moves only the next token (docs/editing.md), and that is what "
        "stops greedy decoding from giving the secret.",
        default_text="whole targets",
    )
    placeholder: str | None = setting(
        None,
        help="The new target of every edit.",
        default_text="the secret's form: digits as 0, words as 'redacted'",
    )

    def to_dict(self) -> dict:
        return asdict(self)
