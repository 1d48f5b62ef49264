"""Settings of the index commands (``index build``, the queries, ``overlap``).

Declared with ``memaudit.io.config.setting``; kept free of heavy imports, so that
``memaudit --help`` starts without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from memaudit.errors import InputError
from memaudit.io.config import (
    adapter_setting,
    check_engine_settings,
    device_map_setting,
    engine_setting,
    overwrite_setting,
    ray_address_setting,
    ray_workers_setting,
    setting,
)

ENGINES = ("local", "ray")


BUILD_BYTES_PER_TOKEN = {1: 10, 2: 24, 4: 40}


@dataclass(frozen=True)
class IndexBuildConfig:
    """Settings of ``memaudit index build``; see ``memaudit index build --help``."""

    corpus: str = setting(
        argument=True,
        help=(
            "'stdlib' (this Python's standard library), a folder (a document per file), .jsonl, "
            ".txt or .parquet."
        ),
    )
    tokenizer: str = setting(
        help=(
            "Model (or tokenizer) dir whose tokenizer the model was trained with, or 'bytes': "
            "UTF-8 bytes as tokens (one index for every model and any text query)."
        )
    )
    out: str = setting(help="Index directory to write (a rebuild reuses its finished shards).")
    overwrite: bool = overwrite_setting()
    memory_gb: float = setting(4.0, help="Memory one shard's build may use; sets the shard size.")
    max_shard_tokens: int | None = setting(None, help="Tokens per shard (overrides --memory-gb).")
    engine: str = setting(
        "local",
        help=(
            "local (one shard at a time) or ray (shards as parallel Ray tasks; pip install "
            "'memaudit[dist]')."
        ),
    )
    workers: int = setting(2, help="CPUs of the local Ray started by --engine ray.")
    ray_address: str | None = setting(
        None,
        help=(
            "Address of a running Ray cluster (e.g. 'auto'); the index dir must be on storage "
            "every node sees."
        ),
    )
    batch_docs: int = setting(512, help="Documents tokenized per batch.")
    skip_invalid: bool = setting(
        False, help="Skip invalid records (listed in index.json) instead of stopping."
    )
    trust_remote_code: bool = setting(False, help="Allow a tokenizer's own code to run.")

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine '{self.engine}'; use {' or '.join(ENGINES)}")
        if self.memory_gb <= 0:
            raise InputError(f"memory_gb must be positive, got {self.memory_gb}")
        if self.max_shard_tokens is not None and self.max_shard_tokens < 1:
            raise InputError(f"max_shard_tokens must be at least 1, got {self.max_shard_tokens}")
        if self.workers < 1 or self.batch_docs < 1:
            raise InputError("workers and batch_docs must be at least 1")

    def shard_tokens(self, width: int) -> int:
        """Tokens per shard: what the memory budget allows, and what a 32-bit suffix array can
        address.
        """
        if self.max_shard_tokens is not None:
            return self.max_shard_tokens
        by_memory = int(self.memory_gb * 2**30 / BUILD_BYTES_PER_TOKEN[width])
        return max(1, min(by_memory, (2**31 - 1) // width - 1))


@dataclass(frozen=True)
class OverlapConfig:
    """Settings of ``memaudit overlap``; see ``memaudit overlap --help``."""

    model: str = setting(help="Model dir (local, safetensors).")
    index: str = setting(help="Index of the model's training corpus, built with its tokenizer.")
    prompts: str = setting(help="Prompts: .jsonl, .txt, .parquet or a folder.")
    out: str = setting("runs/overlap", help="Run directory.")
    overwrite: bool = overwrite_setting()
    max_new_tokens: int = setting(64, help="Tokens generated per prompt.")
    temperature: float = setting(0.0, help="0: greedy; > 0: sample at this temperature.")
    samples: int = setting(1, help="Sampled continuations per prompt (needs --temperature > 0).")
    min_tokens: int = setting(8, help="Shortest span that counts as copied.")
    doc_limit: int = setting(5, help="Source documents listed per copied span at most.")
    batch_size: int = setting(32, help="Prompts decoded together.")
    seed: int = setting(0, help="Seed of sampling and of the bootstrap.")
    n_bootstrap: int = setting(
        1000, minimum=1, help="Bootstrap rounds for the 95% CIs (at least 1: a CI needs them)."
    )
    dtype: str = setting("auto", help="auto, float32, bfloat16, float16.")
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    trust_remote_code: bool = setting(False, help="Allow a model's own code to run.")
    adapter: str | None = adapter_setting()
    device_map: str | None = device_map_setting()
    engine: str = engine_setting()
    ray_address: str | None = ray_address_setting()
    ray_workers: int | None = ray_workers_setting()
    skip_invalid: bool = setting(False, help="Skip invalid prompts instead of stopping.")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if (
            self.max_new_tokens < 1
            or self.samples < 1
            or self.min_tokens < 1
            or self.batch_size < 1
        ):
            raise InputError(
                "max_new_tokens, samples, min_tokens and batch_size must be at least 1"
            )
        if self.temperature < 0:
            raise InputError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.samples > 1:
            raise InputError(
                "greedy decoding (temperature 0) gives one continuation per prompt; set "
                "--temperature for --samples > 1"
            )
        check_engine_settings(self.engine, self.ray_address, self.ray_workers, self.device_map)

    def to_dict(self) -> dict:
        return asdict(self)


QUERY_HELP = (
    "The span to look up: text (tokenized with the index's tokenizer), or token ids with --ids."
)


@dataclass(frozen=True)
class QueryConfig:
    """Settings of ``memaudit index count`` and ``memaudit index longest``."""

    index_dir: str = setting(argument=True, help="Index directory.")
    query: str | None = setting(None, argument=True, help=QUERY_HELP)
    ids: bool = setting(False, help="The query is token ids ('12,7,99'); with --queries, each one.")
    queries: str | None = setting(
        None,
        help=(
            "A file of queries answered in one process instead of QUERY: .txt (a query per "
            "line), .jsonl ('text' and an optional 'id') or .parquet."
        ),
    )
    out: str | None = setting(
        None,
        help="With --queries: write the answers here (.jsonl, or .parquet) instead of stdout.",
    )

    def __post_init__(self):
        if (self.query is None) == (self.queries is None):
            raise InputError("give a QUERY or --queries FILE (one of the two)")
        if self.out is not None and self.queries is None:
            raise InputError("--out writes the answers of --queries; a single query prints its own")


@dataclass(frozen=True)
class LocateConfig:
    """Settings of ``memaudit index locate``."""

    index_dir: str = setting(argument=True, help="Index directory.")
    query: str = setting(argument=True, help=QUERY_HELP)
    ids: bool = setting(False, help="The query is token ids.")
    limit: int = setting(10, help="Occurrences to list at most (the first in corpus order).")
    context: int = setting(8, help="Tokens of context shown on each side.")


@dataclass(frozen=True)
class TextsOverlapConfig:
    """Settings of ``memaudit index overlap``."""

    index_dir: str = setting(argument=True, help="Index directory.")
    texts: str = setting(
        help="Texts to check (e.g. saved generations): .jsonl, .txt, .parquet or a folder."
    )
    min_tokens: int = setting(8, help="Shortest span that counts as copied.")
    out: str | None = setting(
        None, help="Write one JSON line per text here (default: print a summary only)."
    )


@dataclass(frozen=True)
class InfoConfig:
    """Settings of ``memaudit index info``."""

    index_dir: str = setting(argument=True, help="Index directory.")


NGRAM_TOKENS = 13  # GPT-3's and lm-evaluation-harness's decontamination n
NGRAM_BYTES = 50  # on a byte index: about 13 BPE tokens of English or code (3-4 bytes each)
CONTAMINATION_THRESHOLD = 0.7  # PaLM's rule: dirty when >= 70% of an item's n-grams occur


@dataclass(frozen=True)
class ContaminationConfig:
    """Settings of ``memaudit contamination``; see ``memaudit contamination --help``."""

    benchmark: str = setting(
        help="Benchmark items, JSONL: 'id', 'text' or 'question', optional 'answer'."
    )
    index: str = setting(help="Index of the training corpus: a byte index or one of any tokenizer.")
    out: str = setting("runs/contamination", help="Run directory.")
    overwrite: bool = overwrite_setting()
    model: str | None = setting(
        None,
        help=(
            "Model dir: also greedy exact-match accuracy and answer NLL on dirty vs clean "
            "items (items with an 'answer')."
        ),
    )
    ngram: int | None = setting(
        None,
        default_text=f"{NGRAM_TOKENS} tokens; {NGRAM_BYTES} on a byte index",
        help="n of the n-grams looked up, in the index's tokens.",
    )
    threshold: float = setting(
        CONTAMINATION_THRESHOLD,
        help=(
            "An item is contaminated when this share of its n-grams occurs in the corpus "
            "(0: any n-gram, the GPT-3 / lm-eval rule)."
        ),
    )
    docs: int = setting(5, help="Matching documents listed per item at most.")
    answer_separator: str = setting(
        " ", help="Between question and answer, in the checked text and the model's prompt."
    )
    batch_size: int = setting(32, help="Items scored together (with --model).")
    seed: int = setting(0, help="Seed of the bootstrap.")
    n_bootstrap: int = setting(
        1000, minimum=1, help="Bootstrap rounds for the 95% CIs (at least 1: a CI needs them)."
    )
    dtype: str = setting("auto", help="auto, float32, bfloat16, float16.")
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    trust_remote_code: bool = setting(False, help="Allow a model's own code to run.")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if self.ngram is not None and self.ngram < 1:
            raise InputError(f"ngram must be at least 1, got {self.ngram}")
        if not 0 <= self.threshold <= 1:
            raise InputError(f"threshold is a share of n-grams in [0, 1], got {self.threshold}")
        if self.docs < 0 or self.batch_size < 1:
            raise InputError("docs must be >= 0 and batch_size >= 1")

    def to_dict(self) -> dict:
        return asdict(self)
