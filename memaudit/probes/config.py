"""Settings of the probes (``probe kk make|run``, ``temporal``, ``temporal-make``, ``retention``,
``recall``, ``recall-train``).

Declared with ``memaudit.io.config.setting``; kept free of heavy imports, so that
``memaudit --help`` starts without torch.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from memaudit.errors import InputError, UnknownNameError
from memaudit.io.config import overwrite_setting, setting

from .kk import PERTURBATIONS
from .zoo import MIXERS

HF_ARCHS = ("llama", "gpt2")  # recall-train's transformers micro models; other names: zoo mixers
ZOO_ARCHS = tuple(MIXERS.names())  # every registered mixer (the registry loads without torch)


def check_zoo_arch(arch: str, *, flag: str) -> None:
    """``arch`` is a registered mixer; else one line naming the flag, with "did you mean"."""
    try:
        MIXERS.get(arch)
    except UnknownNameError as e:
        raise InputError(f"{flag}: {e}") from None


MQAR_LAYOUTS = ("zoology", "queries-last")  # Zoology's multiquery_ar; memaudit's first layout


def check_mqar_layout(layout: str | None, alpha: float | None) -> None:
    if layout is not None and layout not in MQAR_LAYOUTS:
        raise InputError(f"unknown MQAR layout '{layout}' (known: {', '.join(MQAR_LAYOUTS)})")
    if alpha is not None and not alpha > 0:
        raise InputError(f"MQAR alpha must be > 0, got {alpha}")


def people_range(text: str) -> tuple[int, ...]:
    """'2..8', '3' or '2,4,6' as integers.

    >>> people_range("2..4"), people_range("3,5")
    ((2, 3, 4), (3, 5))
    """
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split(".."))
            return tuple(range(lo, hi + 1))
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"--people must look like 2..8, 3 or 2,4,6; got '{text}'") from None


@dataclass(frozen=True)
class KKMakeConfig:
    """Settings of ``memaudit probe kk make``."""

    people: tuple[int, ...] = setting(
        (2, 3, 4, 5, 6, 7, 8),
        parse=people_range,
        default_text="2..8",
        help="People per puzzle: a range 2..8, or a list 3,5.",
    )
    n: int = setting(10, help="Puzzles per number of people.")
    depth: int = setting(2, help="Most operators nested in one statement.")
    seed: int = setting(0, help="Seed of names, statements and roles.")
    out: str = setting(
        "kk.jsonl",
        help="JSONL to write: text (puzzle + answer), prompt, answer, and the puzzle's structure.",
    )


@dataclass(frozen=True)
class KKRunConfig:
    model: str = setting(help="Model dir (local, safetensors).")
    data: str = setting(
        help="Puzzles from `memaudit probe kk make` (e.g. the ones it was trained on)."
    )
    perturbations: tuple[str, ...] = setting(
        ("leaf", "statement", "names", "roles", "order"),
        flag="--perturb",
        help="Perturbations to measure consistency under.",
    )
    out: str = setting("runs/kk", help="Run directory.")
    overwrite: bool = overwrite_setting()
    max_new_tokens: int | None = setting(
        None, help="Tokens generated per answer.", default_text="enough for the longest answer"
    )
    batch_size: int = setting(16, help="Puzzles decoded together.")
    n_bootstrap: int = setting(
        1000, minimum=1, help="Bootstrap rounds for the 95% CIs (at least 1: a CI needs them)."
    )
    seed: int = setting(0, help="Seed of the perturbations and the bootstrap.")
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        unknown = [k for k in self.perturbations if k not in PERTURBATIONS]
        if unknown:
            raise InputError(
                f"unknown perturbation '{unknown[0]}' (known: {', '.join(PERTURBATIONS)})"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TemporalMakeConfig:
    """Settings of ``memaudit probe temporal-make``."""

    start: str = setting("2020-01-01", help="First date.")
    end: str = setting("2023-12-31", help="Last date.")
    per_month: int = setting(2, help="Facts per month.")
    cutoff: str | None = setting(
        None, help="Also write the facts before this date as a training corpus (--train-out)."
    )
    train_out: str = setting(
        "facts-train.jsonl", help="Training corpus of the facts before --cutoff."
    )
    seed: int = setting(0, help="Seed of items, days and prices.")
    out: str = setting("facts.jsonl", help="JSONL of every fact (date, prompt, answer, text).")

    def dates(self) -> tuple[dt.date, dt.date, dt.date | None]:
        """(start, end, cutoff) as dates; a malformed one is a one-line error."""
        try:
            cut = dt.date.fromisoformat(self.cutoff) if self.cutoff else None
            return dt.date.fromisoformat(self.start), dt.date.fromisoformat(self.end), cut
        except ValueError as e:
            raise InputError(f"dates must be YYYY-MM-DD ({e})") from None


@dataclass(frozen=True)
class TemporalConfig:
    model: str = setting(help="Model dir (local, safetensors).")
    facts: str = setting(
        help="JSONL of dated facts: date (YYYY-MM-DD), prompt, answer (numeric or text)."
    )
    cutoff: str = setting(
        help="The model's training cutoff (YYYY-MM-DD); facts on or after it count as after."
    )
    period: str = setting("quarter", help="Bars of the plot: year, quarter or month.")
    tolerance: float = setting(0.0, help="Numeric answers: largest relative error counted correct.")
    max_new_tokens: int = setting(8, help="Tokens generated per answer.")
    batch_size: int = setting(32, help="Prompts decoded together.")
    out: str = setting("runs/temporal", help="Run directory.")
    overwrite: bool = overwrite_setting()
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def cutoff_date(self) -> dt.date:
        try:
            return dt.date.fromisoformat(self.cutoff)
        except ValueError:
            raise InputError(f"--cutoff must be a date YYYY-MM-DD, got '{self.cutoff}'") from None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RetentionConfig:
    model: str = setting(
        help="Model dir trained with the ledger's canaries (e.g. by `memaudit train --ledger`)."
    )
    ledger: str = setting(help="The ledger (members and their twins).")
    continue_corpus: str = setting(
        help="New data to continue training on: 'stdlib', a folder, .jsonl, .txt, .parquet."
    )
    steps_list: tuple[int, ...] = setting(
        (0, 10, 100, 1000), help="Steps of continued training at which to measure."
    )
    continue_chars: int | None = setting(
        300_000, help="Use only the first documents of the new data up to this many characters."
    )
    lr: float = setting(1e-3, help="Learning rate of the continued training.")
    batch_size: int = setting(16, help="Sequences per step.")
    seq_len: int = setting(128, help="Tokens per sequence.")
    seed: int = setting(0, help="Seed of the data order.")
    out: str = setting("runs/retention", help="Run directory.")
    overwrite: bool = overwrite_setting()
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if (
            not self.steps_list
            or list(self.steps_list) != sorted(set(self.steps_list))
            or self.steps_list[0] < 0
        ):
            raise InputError(
                f"steps list must be increasing non-negative integers, got {list(self.steps_list)}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RecallTrainConfig:
    """Settings of ``memaudit probe recall-train``."""

    out: str = setting(help="Model dir to write.")
    overwrite: bool = overwrite_setting()
    length: int = setting(32, help="Training sequence length.")
    pairs: int = setting(4, help="Key-value pairs per training sequence.")
    vocab: int = setting(
        64,
        help=(
            "MQAR ids used (keys below vocab/2, values above); `probe recall` reads it from the "
            "model dir."
        ),
    )
    layout: str = setting(
        "zoology",
        help=(
            "MQAR layout: zoology (Zoology's multiquery_ar: queries after the context at "
            "power-law gaps, random filler) or queries-last (memaudit's first layout)."
        ),
    )
    alpha: float = setting(
        0.01,
        help="zoology layout: the i-th query slot has weight alpha i^(alpha-1) (1: uniform).",
    )
    steps: int = setting(600, help="Optimizer steps.")
    lr: float = setting(1e-3, help="AdamW learning rate (at 3e-3 some seeds stay on the plateau).")
    size: str = setting("micro", flag="--model-size", help="micro, tiny, small or base.")
    arch: str = setting(
        "llama",
        help=(
            "llama or gpt2: a transformers micro model (rotary / learned absolute positions; "
            "size from --model-size); any other name is a zoo mixer (" + ", ".join(ZOO_ARCHS) + ") "
            "of width --d-model."
        ),
    )
    d_model: int | None = setting(
        None, minimum=1, default_text="64 for a zoo arch", help="Zoo archs: model width."
    )
    state: int | None = setting(
        None,
        minimum=1,
        default_text="the arch's default",
        help="Zoo archs: the arch's own state-size knob (e.g. sliding_window's window).",
    )
    n_layers: int = setting(2, minimum=1, help="Zoo archs: blocks.")
    seed: int = setting(0, help="Seed of initialisation and data.")

    def __post_init__(self):
        check_mqar_layout(self.layout, self.alpha)
        if self.arch in HF_ARCHS and (self.d_model is not None or self.state is not None):
            raise InputError(
                f"--d-model and --state are for zoo archs; --arch {self.arch} takes its size "
                "from --model-size"
            )

        if self.arch not in HF_ARCHS:
            check_zoo_arch(self.arch, flag="--arch")

    def is_zoo(self) -> bool:
        return self.arch not in HF_ARCHS


@dataclass(frozen=True)
class RecallConfig:
    model: str = setting(help="Model dir (local, safetensors).")
    task: str = setting(
        "mqar", help="mqar (associative recall on token ids) or niah (needle in a haystack)."
    )
    lengths: tuple[int, ...] = setting(
        (64, 128, 256), help="Context lengths in tokens (at most the model's context)."
    )
    pairs: tuple[int, ...] = setting((2, 4, 8, 16), help="mqar: key-value pairs per sequence.")
    depths: tuple[float, ...] = setting(
        (0.0, 0.25, 0.5, 0.75, 1.0), help="niah: where the needle sits (0 start, 1 end)."
    )
    n: int = setting(64, help="Sequences per cell.")
    vocab: int | None = setting(
        None,
        default_text="what `probe recall-train` recorded, else the model's vocabulary",
        help="mqar: ids used.",
    )  # MQAR ids; None: the one the model was trained on, else its vocabulary size
    layout: str | None = setting(
        None,
        default_text="what `probe recall-train` recorded, else zoology",
        help="mqar: layout, zoology (Zoology's multiquery_ar) or queries-last (memaudit's first).",
    )
    alpha: float | None = setting(
        None,
        default_text="what `probe recall-train` recorded, else 0.01",
        help="mqar, zoology layout: the i-th query slot has weight alpha i^(alpha-1) (1: uniform).",
    )
    filler: str = setting(
        "stdlib", help="niah: the haystack's text ('stdlib', a folder, .jsonl, .txt)."
    )
    seed: int = setting(0, help="Seed of keys, values and needles.")
    out: str = setting("runs/recall", help="Run directory.")
    overwrite: bool = overwrite_setting()
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if self.task not in ("mqar", "niah"):
            raise InputError(f"unknown task '{self.task}'; use mqar or niah")
        if any(not 0 <= d <= 1 for d in self.depths):
            raise InputError("depths must lie in [0, 1]")
        check_mqar_layout(self.layout, self.alpha)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def parse_states(text: str) -> tuple[str, ...]:
    """'sliding_window=16,sliding_window=64,based=8' as its entries (checked by the config)."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


@dataclass(frozen=True)
class RecallSweepConfig:
    """Settings of ``memaudit probe recall-sweep``."""

    archs: tuple[str, ...] = setting(ZOO_ARCHS, help="Zoo mixers, one line each in the plots.")
    d_models: tuple[int, ...] = setting((32, 64), help="Model widths, one model each.")
    states: tuple[str, ...] = setting(
        (),
        parse=parse_states,
        default_text="every arch at its default",
        help=(
            "State-size knobs, ARCH=S entries (sliding_window=16,sliding_window=64): an arch "
            "named here gets one model per width per S instead of its default."
        ),
    )
    pairs: tuple[int, ...] = setting((4, 8, 16), help="Key-value pairs evaluated.")
    lengths: tuple[int, ...] = setting((64, 128), help="Sequence lengths evaluated.")
    train_pairs: tuple[int, ...] | None = setting(
        None, default_text="--pairs", help="Pairs of the training mix."
    )
    train_lengths: tuple[int, ...] | None = setting(
        None, default_text="--lengths", help="Lengths of the training mix."
    )
    vocab: int = setting(64, help="MQAR ids (keys below vocab/2, values above).")
    layout: str = setting("zoology", help="MQAR layout: zoology or queries-last.")
    alpha: float = setting(0.01, help="zoology layout: query-gap power law (1: uniform).")
    n_layers: int = setting(2, minimum=1, help="Blocks per model.")
    steps: int = setting(
        800, minimum=1, help="Optimizer steps per model (the first half on the fewest pairs)."
    )
    batch_size: int = setting(64, minimum=1, help="Sequences per step.")
    lr: float = setting(
        1e-3, help="AdamW learning rate (constant; at 3e-3 attention stayed on the plateau)."
    )
    n: int = setting(128, minimum=1, help="Evaluation sequences per (length, pairs).")
    seed: int = setting(0, help="Seed of initialisation, training data and evaluation data.")
    quick: bool = setting(
        False,
        help=(
            "A small sweep: attention and linear_attention at width 32, few steps (every size "
            "setting left at its default takes its --quick value)."
        ),
    )
    workers: int = setting(0, minimum=0, help="Cells trained at once (0: one per CPU core).")
    out: str = setting(
        "runs/recall-sweep", help="Run directory (cells/ holds every model; a rerun resumes)."
    )
    overwrite: bool = overwrite_setting()
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        check_mqar_layout(self.layout, self.alpha)
        for name in ("archs", "d_models", "pairs", "lengths"):
            if not getattr(self, name):
                raise InputError(f"--{name.replace('_', '-')} is empty")
        for arch in self.archs:
            check_zoo_arch(arch, flag="--archs")
        if len(set(self.archs)) != len(self.archs):
            raise InputError("--archs names an arch twice")
        if min(self.d_models) < 1 or min(self.pairs) < 1 or min(self.lengths) < 4:
            raise InputError("--d-models, --pairs must be >= 1 and --lengths >= 4")
        self.states_of()

    def states_of(self) -> dict[str, list[int | None]]:
        """Per arch, the states of its cells (``[None]``: its default)."""
        out: dict[str, list[int | None]] = {a: [] for a in self.archs}
        for entry in self.states:
            arch, eq, value = entry.partition("=")
            if not eq or not value.strip().isdigit() or int(value) < 1:
                raise InputError(f"--states: '{entry}' is not ARCH=S with S a positive integer")
            if arch not in out:
                raise InputError(
                    f"--states: '{arch}' is not among --archs ({', '.join(self.archs)})"
                )
            if int(value) not in out[arch]:
                out[arch].append(int(value))
        return {a: s or [None] for a, s in out.items()}

    def resolved(self) -> RecallSweepConfig:
        """With ``quick``: every size setting still at its default replaced by ``QUICK_SWEEP``'s."""
        if not self.quick:
            return self
        from dataclasses import fields, replace

        defaults = {f.name: f.default for f in fields(self)}
        return replace(
            self,
            **{k: v for k, v in QUICK_SWEEP.items() if getattr(self, k) == defaults[k]},
        )

    def to_dict(self) -> dict:
        return asdict(self)


QUICK_SWEEP: dict[str, Any] = {
    "archs": ("attention", "linear_attention"),
    "d_models": (32,),
    "pairs": (4, 8),
    "lengths": (32, 64),
    "steps": 600,
}  # --quick: attention > linear attention at width 32, in seconds per cell


@dataclass(frozen=True)
class OrderConfig:
    """Settings of ``memaudit probe order``: the training-order effect on memorization,
    retrained vs estimated from one recorded run (docs/order.md).
    """

    corpus: str = setting(
        "stdlib", help="Training documents: 'stdlib', a folder, .jsonl, .txt, .parquet."
    )
    corpus_chars: int = setting(
        200_000, help="Use only the first documents of the corpus up to this many characters."
    )
    size: str = setting("micro", help="Model size of memaudit's GPT-2 (micro, tiny, ...).")
    vocab_size: int = setting(512, help="BPE vocabulary trained on the corpus.")
    steps: int = setting(120, help="Training steps of every run.")
    batch_size: int = setting(8, help="Sequences per step.")
    seq_len: int = setting(64, help="Tokens per sequence; each sample is one sequence.")
    lr: float = setting(1e-3, help="Peak learning rate (fit's warm-up and cosine schedule).")
    warmup: int = setting(10, help="Warm-up steps.")
    samples: int = setting(
        4, help="Held-out sequences placed in training; memorization = their final loss."
    )
    copies: int = setting(2, help="Rows of its step each sample fills (copies in one batch).")
    positions: tuple[float, ...] = setting(
        (0.05, 0.35, 0.65, 0.95),
        help="Where in training a sample can go, as fractions of the steps; sample i's "
        "reference position is position i mod their number, each other one is an "
        "alternative order (a swap of its rows with that step's).",
    )
    projection_dim: int = setting(
        1024, help="Random projection size for the stored gradients and parameter changes."
    )
    second_order: bool = setting(
        True,
        flag="--no-second-order",
        negate=True,
        help="Skip the second-order estimate (Hessian-vector products every step).",
    )
    seed: int = setting(0, help="Seed of the model init, the corpus order and the projection.")
    out: str = setting("runs/order", help="Run directory.")
    overwrite: bool = overwrite_setting()
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if self.steps < 2 or self.batch_size < 1 or self.seq_len < 4:
            raise InputError("steps must be >= 2, batch size >= 1 and seq len >= 4")
        if self.samples < 1 or self.copies < 1:
            raise InputError("samples and copies must be >= 1")
        if self.samples * self.copies > self.batch_size:
            raise InputError(
                f"samples x copies = {self.samples * self.copies} rows do not fit a batch of "
                f"{self.batch_size} (each sample keeps its own rows at every position)"
            )
        if len(self.positions) < 2 or any(not 0 <= p < 1 for p in self.positions):
            raise InputError(
                f"positions must be at least two fractions in [0, 1), got {list(self.positions)}"
            )
        steps = [self.position_step(p) for p in self.positions]
        if len(set(steps)) != len(steps):
            raise InputError(
                f"positions {list(self.positions)} fall on steps {steps} of {self.steps}: "
                "each needs its own step"
            )
        if not (self.lr > 0 and self.warmup >= 0 and self.projection_dim >= 1):
            raise InputError("lr must be > 0, warmup >= 0 and projection dim >= 1")
        if self.vocab_size < 260 or self.corpus_chars < 1:
            raise InputError("vocab size must be >= 260 (bytes + merges) and corpus chars >= 1")

    def position_step(self, fraction: float) -> int:
        return min(self.steps - 1, int(round(fraction * self.steps)))

    def to_dict(self) -> dict:
        return asdict(self)
