"""Settings of the lab's commands (``extract``, ``train``, ``demo``, ``canaries make|split``).

Declared with ``memaudit.io.config.setting``; kept free of heavy imports, so that
``memaudit --help`` starts without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from memaudit.errors import InputError
from memaudit.io.config import (
    adapter_setting,
    bos_setting,
    check_engine_settings,
    device_map_setting,
    engine_setting,
    overwrite_setting,
    ray_address_setting,
    ray_workers_setting,
    setting,
)

if TYPE_CHECKING:
    from .lm import TrainSettings


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of ``memaudit extract``; see ``memaudit extract --help``."""

    model: str = setting(help="Model dir (local, safetensors).")
    data: str = setting(help="Texts: .jsonl, .txt, .parquet or a folder.")
    prefix_tokens: int = setting(32, short="-k", help="Prompt length K in tokens.")
    suffix_tokens: int = setting(32, short="-m", help="Tokens M to generate and compare.")
    group_by: str | None = setting(
        None, help="Metadata field to group rates by (e.g. repetitions)."
    )
    index: str | None = setting(
        None,
        help="Corpus index (`memaudit index build`): add each text's corpus count and rates "
        "per duplication bucket (1, 2-4, 5-16, 17-64, >64).",
    )
    out: str = setting("runs/extract", help="Run directory.")
    overwrite: bool = overwrite_setting()
    dtype: str = setting(
        "auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16."
    )
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    trust_remote_code: bool = setting(False, help="Allow a model's own code to run.")
    adapter: str | None = adapter_setting()
    device_map: str | None = device_map_setting()
    bos: str = bos_setting()
    batch_size: int = setting(64, help="Prompts decoded together.")
    cache_dir: str | None = setting(None, help="Score cache root.")
    no_cache: bool = setting(False, help="Keep no scores on disk.")
    engine: str = engine_setting()
    ray_address: str | None = ray_address_setting()
    ray_workers: int | None = ray_workers_setting()
    skip_invalid: bool = setting(False, help="Skip invalid or too-short texts instead of stopping.")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if self.prefix_tokens < 1 or self.suffix_tokens < 1:
            raise InputError(
                f"prefix_tokens and suffix_tokens must be >= 1, got {self.prefix_tokens} and "
                f"{self.suffix_tokens}"
            )
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        check_engine_settings(self.engine, self.ray_address, self.ray_workers, self.device_map)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``memaudit train``; see ``memaudit train --help``."""

    out: str = setting(help="Model dir to write (resumes a killed run with the same settings).")
    overwrite: bool = overwrite_setting()
    corpus: str = setting(
        "stdlib",
        help="'stdlib' (this Python's standard library), a folder, .jsonl, .txt or .parquet.",
    )
    ledger: str | None = setting(
        None, help="Canary ledger from `memaudit canaries make`: members are inserted."
    )
    model_size: str = setting("tiny", help="micro, tiny, small or base.")
    steps: int = setting(300, help="Optimizer steps.")
    batch_size: int = setting(16, help="Sequences per step.")
    seq_len: int = setting(128, help="Tokens per sequence.")
    lr: float = setting(1e-3, help="Peak learning rate (warm-up, then cosine decay).")
    warmup: int = setting(20, help="Warm-up steps of the learning rate.")
    vocab_size: int = setting(4096, help="BPE vocabulary size (trained on the corpus).")
    context: int = setting(256, help="Model context in tokens (positions it can attend to).")
    corpus_chars: int | None = setting(
        None,
        help="Use only the first documents up to this many characters (the last one is cut).",
        minimum=1,
    )
    skip_invalid: bool = setting(
        False,
        help="Leave out invalid corpus records (listed in memaudit_train.json) instead of "
        "stopping at the first.",
    )
    seed: int = setting(0, help="Seed of initialisation, data order and insertion places.")
    checkpoint_every: int = setting(50, help="Steps between checkpoints (0: none).")
    init_from: str | None = setting(
        None, help="Continue training this model dir (its tokenizer and size are kept)."
    )
    tokenizer: str | None = setting(
        None,
        help="Use this model dir's tokenizer instead of training one on the corpus (a retrain "
        "keeps the original's).",
    )
    device: str = setting(
        "auto", help="auto (CUDA when present), cpu, cuda, ...; training is float32."
    )  # auto: CUDA when present; training is always float32

    def __post_init__(self):
        from .lm import SIZES

        if self.model_size not in SIZES:
            raise InputError(f"unknown model size '{self.model_size}' (known: {', '.join(SIZES)})")
        if self.checkpoint_every < 0 or self.vocab_size < 300:
            raise InputError("checkpoint_every must be >= 0 and vocab_size >= 300")
        if self.seq_len > self.context:
            raise InputError(f"seq_len {self.seq_len} exceeds the model context {self.context}")
        self.settings()  # checks steps, batch_size, seq_len

    def settings(self) -> TrainSettings:
        from .lm import TrainSettings

        return TrainSettings(
            steps=self.steps,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            lr=self.lr,
            warmup=self.warmup,
            seed=self.seed,
        )


@dataclass(frozen=True)
class DemoSettings:
    """The demo's visible defaults: about 3 minutes on 2 CPU cores."""

    repetitions: tuple[int, ...] = (1, 4, 16, 64, 256)
    per_level: int = 8
    model_size: str = "tiny"
    steps: int = 300
    seq_len: int = 128
    batch_size: int = 16
    corpus_chars: int = 200_000
    vocab_size: int = 2048
    lr: float = 1e-3
    n_candidates: int = 128
    seed: int = 0

    @classmethod
    def quick(cls, *, seed: int = 0) -> DemoSettings:
        """About 30 seconds: fewer canaries, a smaller slice of the corpus, shorter sequences."""
        return cls(
            repetitions=(1, 16, 256),
            per_level=4,
            steps=120,
            seq_len=64,
            corpus_chars=60_000,
            n_candidates=50,
            seed=seed,
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``memaudit demo``: where it writes and which of the two sizes of
    ``DemoSettings`` it runs.
    """

    out: str = setting(
        "runs/demo", help="Where the demo writes its canaries, model, cache and report."
    )
    overwrite: bool = overwrite_setting()
    quick: bool = setting(False, help="A smaller run of about 30 seconds (used by the tests).")
    seed: int = setting(0, help="Seed of canaries, training and evaluation.")

    def settings(self) -> DemoSettings:
        return DemoSettings.quick(seed=self.seed) if self.quick else DemoSettings(seed=self.seed)


@dataclass(frozen=True)
class CanaryMakeConfig:
    """Settings of ``memaudit canaries make``."""

    out: str = setting("canaries.jsonl", help="The ledger to write (JSONL).")
    repetitions: tuple[int, ...] = setting(
        (1, 2, 4, 8, 16, 32), help="Repetition counts; each gets --per-level canaries."
    )
    per_level: int = setting(4, help="Canaries per repetition count (each with a held-out twin).")
    templates: tuple[str, ...] = setting(
        ("api_key", "card", "phone", "passphrase"), help="Templates to rotate through."
    )
    policy: str = setting(
        "uniform",
        help="When in training they are inserted: uniform, early, middle or late (thirds).",
    )
    seed: int = setting(0, help="Seed of names and secrets.")


@dataclass(frozen=True)
class CanarySplitConfig:
    """Settings of ``memaudit canaries split``."""

    ledger: str = setting(help="A ledger (e.g. the one `memaudit train` wrote into its model dir).")
    min_repetitions: int = setting(
        1, help="Members inserted at least this often form the forget set."
    )
    forget: str = setting(
        "forget.jsonl", help="Where to write the forget set (JSONL with text and prefix)."
    )
    holdout: str = setting("holdout.jsonl", help="Where to write their never-inserted twins.")


SWEEP_PHASES = ("uniform", "early", "middle", "late")  # the canaries' position policies


@dataclass(frozen=True)
class LabSweepConfig:
    """Settings of ``memaudit lab sweep``: Hubble's experiments (dilution, insertion phase,
    benchmark contamination) on small models trained here.
    """

    out: str = setting(
        "runs/lab-sweep", help="Run directory (cells/ holds every model; a rerun resumes)."
    )
    overwrite: bool = overwrite_setting()
    corpus: str = setting(
        "stdlib",
        help="Non-canary training text: 'stdlib' (this Python's standard library, cut into "
        "shuffled snippets) or a file or folder; it must hold --base-chars x the largest "
        "dilution characters.",
    )
    dilutions: tuple[int, ...] = setting(
        (1, 4, 16),
        help="Corpus sizes in units of --base-chars; steps grow with them, canary copies stay.",
    )
    phases: tuple[str, ...] = setting(
        ("early", "middle", "late"),
        help="Insertion phases of the phase cells: uniform, early, middle or late (thirds).",
    )
    phase_dilution: int = setting(
        4,
        minimum=1,
        help="The dilution of the phase cells (the dilution cells are uniform); 4: two thirds "
        "of a 4x run left to forget in, and room in a third for every insertion (at 1 the "
        "default's insertions do not fit; docs/hubble.md).",
    )
    repetitions: tuple[int, ...] = setting(
        (16, 64, 256),
        help="Canary copies; each count gets --per-level canaries and their twins.",
    )
    per_level: int = setting(8, minimum=1, help="Canaries per copy count.")
    copies: tuple[int, ...] = setting(
        (0, 1, 4, 16, 64, 256), help="Benchmark item copies (0: clean items, never inserted)."
    )
    items_per_level: int = setting(8, minimum=1, help="Benchmark items per copy count.")
    model_size: str = setting("micro", help="micro, tiny, small or base.")
    base_steps: int = setting(1600, minimum=1, help="Optimizer steps at dilution 1.")
    base_chars: int = setting(550_000, minimum=1, help="Corpus characters at dilution 1.")
    # small batches of short sequences: each insertion is a larger share of its step's
    # gradient, so the micro model memorizes verbatim within minutes (docs/hubble.md)
    batch_size: int = setting(4, minimum=1, help="Sequences per step.")
    seq_len: int = setting(64, minimum=2, help="Tokens per sequence.")
    lr: float = setting(3e-3, help="Peak learning rate (warm-up, then cosine decay to 10%).")
    warmup: int = setting(20, minimum=0, help="Warm-up steps.")
    vocab_size: int = setting(1024, help="BPE vocabulary, trained once on the dilution-1 corpus.")
    n_candidates: int = setting(64, minimum=2, help="Random secrets per canary for exposure.")
    seed: int = setting(0, help="Seed of canaries, items, initialisation and insertion places.")
    device: str = setting("auto", help="auto (CUDA when present), cpu, cuda, ...")
    quick: bool = setting(
        False,
        help="A small sweep of seconds (the tests): every size setting left at its default "
        "takes its --quick value.",
    )
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        for name in ("dilutions", "phases", "repetitions", "copies"):
            values = getattr(self, name)
            flag = f"--{name}"
            if not values:
                raise InputError(f"{flag} is empty")
            if len(set(values)) != len(values):
                raise InputError(f"{flag} names a value twice: {', '.join(map(str, values))}")
        unknown = [p for p in self.phases if p not in SWEEP_PHASES]
        if unknown:
            raise InputError(
                f"--phases: unknown phase '{unknown[0]}' (known: {', '.join(SWEEP_PHASES)})"
            )
        if min(self.dilutions) < 1:
            raise InputError(f"--dilutions must be >= 1, got {min(self.dilutions)}")
        if min(self.repetitions) < 1:
            raise InputError(f"--repetitions must be >= 1, got {min(self.repetitions)}")
        if min(self.copies) < 0:
            raise InputError(f"--copies must be >= 0, got {min(self.copies)}")
        self.train_config(out="-", steps=self.base_steps, corpus_chars=self.base_chars)

    def train_config(
        self, *, out: str, steps: int, corpus_chars: int, corpus: str | None = None, **more: Any
    ) -> TrainConfig:
        """One cell's ``memaudit train`` settings (checks model size, vocabulary, lengths)."""
        return TrainConfig(
            out=out,
            corpus=corpus or self.corpus,
            model_size=self.model_size,
            steps=steps,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            lr=self.lr,
            warmup=self.warmup,
            vocab_size=self.vocab_size,
            context=max(self.seq_len, 128),
            corpus_chars=corpus_chars,
            seed=self.seed,
            checkpoint_every=max(1, steps // 4),
            device=self.device,
            **more,
        )

    def resolved(self) -> LabSweepConfig:
        """With ``quick``: each size setting still at its default takes ``QUICK_LAB_SWEEP``'s."""
        if not self.quick:
            return self
        from dataclasses import fields, replace

        defaults = {f.name: f.default for f in fields(self)}
        return replace(
            self, **{k: v for k, v in QUICK_LAB_SWEEP.items() if getattr(self, k) == defaults[k]}
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK_LAB_SWEEP: dict[str, Any] = {
    "dilutions": (1, 4),
    "phases": ("early", "late"),
    "repetitions": (4, 16),
    "per_level": 2,
    "copies": (0, 4, 16),
    "items_per_level": 2,
    "base_steps": 40,
    "base_chars": 20_000,
    "batch_size": 4,
    "seq_len": 128,
    "phase_dilution": 1,
    "vocab_size": 400,
    "n_candidates": 16,
}  # --quick: every code path in seconds; too small to show the findings
