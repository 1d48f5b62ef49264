"""Settings of the proving commands (``mia``, ``dataset-inference``, ``traps make|inject|detect``).

Declared with ``memaudit.io.config.setting``; kept free of heavy imports, so that
``memaudit --help`` starts without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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


def check_max_tokens(value: int) -> None:
    """``--max-tokens-per-text``: 0 (no limit) or enough tokens to score one (the first has no
    context)."""
    if value == 1 or value < 0:
        raise InputError(f"max_tokens_per_text must be 0 (no limit) or >= 2, got {value}")


@dataclass(frozen=True)
class MiaConfig:
    """Settings of ``memaudit mia``; see ``memaudit mia --help`` for each one."""

    model: str = setting(help="Target model: a local Hugging Face directory (safetensors).")
    members: str | None = setting(
        None,
        help="Known members: .jsonl (a 'text' field), .txt (one per line), .parquet or a folder.",
    )
    nonmembers: str | None = setting(None, help="Known non-members, same formats.")
    data: str | None = setting(
        None,
        help=(
            "Instead of --members/--nonmembers: one .jsonl/.parquet holding both, labelled "
            "by --label-field (WikiMIA) or paired by --pair-fields (MIMIR)."
        ),
    )
    label_field: str = setting(
        "label", help="With --data: the field holding 1 (member) or 0 (non-member)."
    )
    text_field: str = setting("text", help="With --data: the field holding the text.")
    pair_fields: str | None = setting(
        None,
        help=(
            "With --data: 'member,nonmember' (MIMIR's layout): each record holds one member "
            "and one non-member text in these two fields; --label-field is then unused."
        ),
    )
    reference: str | None = setting(
        None, help="Reference model dir for the 'reference' attack (its tokenizer may differ)."
    )
    attacks: str = setting(
        "all", help="'all' or a comma list, e.g. 'loss,zlib,min_k:k=0.1'. See `memaudit attacks`."
    )
    index: str | None = setting(
        None,
        help=(
            "Corpus index (`memaudit index build`): add each text's corpus count and AUC per "
            "duplication bucket."
        ),
    )
    # conditional and calibrated attacks (recall, con_recall, dc_pdd, pac)
    prefix_texts: str | None = setting(
        None,
        help=(
            "Non-member texts (same formats as --members); the first --recall-shots make the "
            "prefix of recall and con_recall."
        ),
    )
    member_prefix_texts: str | None = setting(
        None, help="Member texts for con_recall's member prefix (first --recall-shots)."
    )
    recall_shots: int = setting(12, minimum=1, help="Texts in each ReCaLL prefix.")
    token_frequencies: str | None = setting(
        None,
        help=(
            'JSONL of {"id": token id, "count": n}: reference-corpus token counts for dc_pdd '
            "(else --index)."
        ),
    )
    pac_augmentations: int = setting(
        2, minimum=1, help="Word-swapped copies per text for pac (the paper uses 5)."
    )
    pac_seed: int = setting(0, help="Seed of pac's word swaps.")
    # shadow-model attacks (lira, lira_offline, rmia)
    shadows: str | None = setting(
        None, help="Shadow models dir (`memaudit shadows train`) for lira, lira_offline, rmia."
    )
    population: str | None = setting(
        None, help="Population texts (non-members of the target) that rmia compares against."
    )
    out: str = setting(
        "runs/mia", help="Run directory for results.json, scores.parquet, report.html."
    )
    overwrite: bool = overwrite_setting()
    dtype: str = setting(
        "auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16."
    )
    device: str = setting("auto", help="auto, cpu, cuda, cuda:1, ...")
    trust_remote_code: bool = setting(
        False, help="Allow a model's own Python code to run (off by default)."
    )
    adapter: str | None = adapter_setting()
    device_map: str | None = device_map_setting()
    bos: str = bos_setting()
    max_length: int | None = setting(
        None, help="Window length in tokens.", default_text="the model's context"
    )
    stride: int | None = setting(
        None, help="Sliding-window stride for long texts.", default_text="half a window"
    )
    max_tokens_per_text: int = setting(
        2048,
        minimum=0,
        help=(
            "Cut each text after this many target tokens before scoring (0: no limit); "
            "results.json counts the texts cut."
        ),
    )
    batch_tokens: int = setting(8192, help="Padded tokens per forward batch.")
    max_batch_size: int = setting(64, help="Windows per forward batch at most.")
    shard_texts: int = setting(256, help="Texts per cache shard.")
    cache_dir: str | None = setting(
        None, help="Score cache root.", default_text="$MEMAUDIT_CACHE or ~/.cache/memaudit"
    )
    no_cache: bool = setting(False, help="Score everything afresh and keep nothing.")
    engine: str = engine_setting()
    ray_address: str | None = ray_address_setting()
    ray_workers: int | None = ray_workers_setting()
    skip_invalid: bool = setting(
        False, help="Skip invalid records (counted in results.json) instead of stopping."
    )
    n_bootstrap: int = setting(
        1000, minimum=1, help="Bootstrap rounds for the 95% CIs (at least 1: a CI needs them)."
    )
    seed: int = setting(0, help="Seed of the bootstrap.")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")
    # the opt-in attacks samia, neighbourhood, gradnorm (memaudit/attacks/sampled.py)
    samia_samples: int = setting(10, minimum=1, help="samia: continuations sampled per text.")
    samia_prefix_share: float = setting(
        0.5, help="samia: share of each text's tokens given as the prefix, in (0, 1)."
    )
    samia_temperature: float = setting(1.0, help="samia: sampling temperature (> 0).")
    samia_top_k: int = setting(50, minimum=0, help="samia: sample among the top k tokens (0: all).")
    samia_ngram: int = setting(1, minimum=1, help="samia: n of the ROUGE-N recall (words).")
    neighbour_model: str | None = setting(
        None, help="neighbourhood: a local masked LM dir (BERT/RoBERTa-style, safetensors)."
    )
    neighbours: int = setting(25, minimum=1, help="neighbourhood: neighbours per text.")
    neighbour_dropout: float = setting(
        0.7, help="neighbourhood: dropout on the replaced word's embedding, in [0, 1)."
    )
    attack_seed: int = setting(0, help="Seed of samia's samples and neighbourhood's dropout.")

    def __post_init__(self):
        if self.n_bootstrap < 1:
            raise InputError(
                f"n_bootstrap must be >= 1 (a CI needs rounds), got {self.n_bootstrap}"
            )
        check_max_tokens(self.max_tokens_per_text)
        check_engine_settings(self.engine, self.ray_address, self.ray_workers, self.device_map)
        two_files = self.members is not None or self.nonmembers is not None
        if self.data is not None and two_files:
            raise InputError("give either --data or --members/--nonmembers, not both")
        if self.data is None and (self.members is None or self.nonmembers is None):
            raise InputError("give --members and --nonmembers, or one labelled --data file")
        if self.pair_fields is not None and len(self.pair()) != 2:
            raise InputError(
                f"--pair-fields needs two field names, e.g. 'member,nonmember'; "
                f"got '{self.pair_fields}'"
            )

    def pair(self) -> tuple[str, ...]:
        """The two fields of --pair-fields (member first)."""
        return tuple(f.strip() for f in (self.pair_fields or "").split(",") if f.strip())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ShadowsTrainConfig:
    """Settings of ``memaudit shadows train``: the lab trainer's, once per shadow."""

    pool: str = setting(help="The texts the shadows are trained on: .jsonl, .txt, .parquet.")
    out: str = setting(help="Shadows dir to write (a killed run resumes with the same settings).")
    n_models: int = setting(
        4, minimum=2, help="Shadow models (even: each text is in exactly half of them)."
    )
    overwrite: bool = overwrite_setting()
    tokenizer: str | None = setting(
        None,
        help="Model dir whose tokenizer every shadow uses (the target's, so scores compare).",
        default_text="one trained on the pool",
    )
    model_size: str = setting("tiny", help="micro, tiny, small or base.")
    steps: int = setting(300, help="Optimizer steps per shadow.")
    batch_size: int = setting(16, help="Sequences per step.")
    seq_len: int = setting(128, help="Tokens per sequence.")
    lr: float = setting(1e-3, help="Peak learning rate (warm-up, then cosine decay).")
    warmup: int = setting(20, help="Warm-up steps of the learning rate.")
    vocab_size: int = setting(4096, help="BPE vocabulary size, when no --tokenizer is given.")
    context: int = setting(256, help="Model context in tokens.")
    seed: int = setting(
        0, help="Seed of the halves; shadow i trains with seed + i (init and data order)."
    )
    checkpoint_every: int = setting(50, help="Steps between checkpoints (0: none).")
    device: str = setting("auto", help="auto (CUDA when present), cpu, cuda, ...")

    def __post_init__(self):
        if self.n_models < 2 or self.n_models % 2:
            raise InputError(
                f"n_models must be even and >= 2 (each text in exactly half), got {self.n_models}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetInferenceConfig:
    """Settings of ``memaudit dataset-inference``; see its ``--help``."""

    model: str = setting(help="Model dir (local, safetensors).")
    suspect: str = setting(help="The texts suspected to have been trained on.")
    validation: str = setting(help="Comparable texts surely not trained on.")
    reference: str | None = setting(None, help="Reference model dir: adds the reference feature.")
    out: str = setting("runs/dataset-inference", help="Run directory.")
    overwrite: bool = overwrite_setting()
    alpha: float = setting(0.1, help="Claim 'trained on' when p < alpha.")
    n_splits: int = setting(
        10, flag="--splits", help="Seeded half/half splits; twice their median p-value is reported."
    )
    false_positive_check: bool = setting(
        False, help="Also test two halves of the validation set against each other, repeatedly."
    )
    fp_repeats: int = setting(50, help="Repeats of the false-positive check.")
    seed: int = setting(0, help="Seed of the splits.")
    dtype: str = setting("auto", help="auto, float32, bfloat16, float16.")
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    trust_remote_code: bool = setting(False, help="Allow a model's own code to run.")
    adapter: str | None = adapter_setting()
    device_map: str | None = device_map_setting()
    bos: str = bos_setting()
    cache_dir: str | None = setting(None, help="Score cache root.")
    no_cache: bool = setting(False, help="Keep no scores on disk.")
    max_tokens_per_text: int = setting(
        2048,
        minimum=0,
        help="Cut each text after this many target tokens (0: no limit), as mia does.",
    )
    skip_invalid: bool = setting(False, help="Skip invalid records instead of stopping.")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        check_max_tokens(self.max_tokens_per_text)
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.n_splits < 1 or self.fp_repeats < 1:
            raise InputError("n_splits and fp_repeats must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrapRecipe:
    """How ``memaudit traps make`` samples, buckets and deduplicates (see docs/mia.md).

    ``perplexity_range`` (lo, hi): fixed buckets of equal width over the integer perplexities
    lo..hi (``floor(ppl)``), filled evenly over those integers, sequences outside refused; None:
    quantile buckets of the sampled pool. A candidate is dropped when the Jaccard similarity
    of its set of token ``jaccard_ngram``-grams with any sequence already kept for its length
    (in any bucket, trap or control) exceeds 0.2.
    """

    name: str
    temperatures: tuple[float, ...]
    buckets: int
    perplexity_range: tuple[int, int] | None
    jaccard_ngram: int

    def to_dict(self) -> dict[str, Any]:
        """As a ledger and results.json record it (lists for tuples)."""
        rng = self.perplexity_range
        return {
            **asdict(self),
            "temperatures": list(self.temperatures),
            "perplexity_range": None if rng is None else list(rng),
        }


TRAP_RECIPES = {
    # memaudit: quantile buckets fit any reference; trigrams, since two code snippets share
    # most single tokens (indentation, brackets, self)
    "memaudit": TrapRecipe("memaudit", (0.7, 1.0, 1.3, 1.6), 3, None, 3),
    # Meeus et al. 2024, the defaults of the authors' gen_traps.py: temperatures
    # arange(0.5, 4, 0.5), integer perplexity 1..100 in 10 buckets, token-set Jaccard
    "paper": TrapRecipe("paper", (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5), 10, (1, 100), 1),
}


def trap_recipe(
    name: str = "memaudit",
    *,
    buckets: int | None = None,
    temperatures: tuple[float, ...] | None = None,
    perplexity_range: tuple[int, ...] | None = None,
) -> TrapRecipe:
    """The recipe ``name`` with the given settings in place of its own.

    Raises
    ------
    InputError
        An unknown recipe, a perplexity range for the quantile recipe, or settings that do not
        fit together.
    """
    if name not in TRAP_RECIPES:
        raise InputError(f"unknown trap recipe '{name}' (known: {', '.join(TRAP_RECIPES)})")
    base = TRAP_RECIPES[name]
    if perplexity_range is not None and base.perplexity_range is None:
        raise InputError(
            f"recipe '{name}' buckets by quantiles of the pool; --perplexity-range needs "
            "--recipe paper"
        )
    rng = base.perplexity_range if perplexity_range is None else perplexity_range
    recipe = TrapRecipe(
        name,
        base.temperatures if temperatures is None else tuple(temperatures),
        base.buckets if buckets is None else buckets,
        None if rng is None else (rng[0], rng[-1]),
        base.jaccard_ngram,
    )
    if recipe.buckets < 1 or not recipe.temperatures or min(recipe.temperatures) <= 0:
        raise InputError("a trap recipe needs at least one bucket and temperatures > 0")
    if rng is not None:
        if len(rng) != 2 or not 1 <= rng[0] < rng[1]:
            raise InputError(f"perplexity range must be two integers 1 <= lo < hi, got {rng}")
        if (rng[1] - rng[0] + 1) % recipe.buckets:
            raise InputError(
                f"{recipe.buckets} buckets do not split the integer perplexities {rng[0]}.."
                f"{rng[1]} evenly"
            )
    return recipe


@dataclass(frozen=True)
class TrapMakeConfig:
    """Settings of ``memaudit traps make``."""

    reference: str = setting(help="Reference model dir to sample traps from.")
    out: str = setting("traps.jsonl", help="The trap ledger to write.")
    lengths: tuple[int, ...] = setting((25, 50, 100), help="Trap lengths in reference tokens.")
    per_bucket: int = setting(
        4, minimum=1, help="Traps per length and perplexity bucket (plus as many controls)."
    )
    recipe: str = setting(
        "memaudit",
        help=(
            "Generation defaults: 'memaudit' (temperatures 0.7-1.6, 3 quantile buckets of the "
            "pool, token-trigram Jaccard) or 'paper' (Meeus et al. 2024: temperatures 0.5-3.5, "
            "10 buckets of integer perplexity 1-100 filled evenly, token-set Jaccard)."
        ),
    )
    buckets: int | None = setting(
        None, minimum=1, help="Perplexity buckets.", default_text="the recipe's (3 or 10)"
    )
    temperatures: tuple[float, ...] | None = setting(
        None, help="Sampling temperatures, equally many samples each.", default_text="the recipe's"
    )
    perplexity_range: tuple[int, ...] | None = setting(
        None,
        help="Fixed buckets over these integer perplexities, e.g. 1,100 (recipe 'paper' only).",
        default_text="1,100",
    )
    pool_factor: int = setting(
        25,
        minimum=1,
        help="Sequences sampled per trap needed (raise it when too few are distinct).",
    )
    seed: int = setting(0, help="Seed of the sampling.")

    def __post_init__(self):
        self.generation()  # a bad combination fails before the reference is loaded

    def generation(self) -> TrapRecipe:
        """The recipe with this config's settings in place of its own."""
        return trap_recipe(
            self.recipe,
            buckets=self.buckets,
            temperatures=self.temperatures,
            perplexity_range=self.perplexity_range,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


INJECT_RECIPES = ("memaudit", "paper")


@dataclass(frozen=True)
class TrapInjectConfig:
    """Settings of ``memaudit traps inject``."""

    ledger: str = setting(help="Trap ledger from `memaudit traps make`.")
    docs: str = setting(help="Documents: 'stdlib', a folder, .jsonl, .txt or .parquet.")
    out: str = setting(help="The injected corpus to write (.jsonl); the originals are untouched.")
    repetitions: tuple[int, ...] = setting(
        (1, 10, 100), help="Copies per trap, rotated over the traps of each bucket."
    )
    recipe: str = setting(
        "memaudit",
        help=(
            "Where copies go, each at its own position: 'memaudit' (line starts; word starts "
            "in text without line breaks) or 'paper' (after any space, as Meeus et al. 2024 "
            "split on spaces)."
        ),
    )
    corpus_chars: int | None = setting(
        None, help="Use only the first documents up to this many characters."
    )
    seed: int = setting(0, help="Seed of documents and positions.")

    def __post_init__(self):
        if self.recipe not in INJECT_RECIPES:
            raise InputError(
                f"unknown injection recipe '{self.recipe}' (known: {', '.join(INJECT_RECIPES)})"
            )
        if not self.repetitions or min(self.repetitions) < 1:
            raise InputError(f"repetitions must be >= 1, got {self.repetitions}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrapDetectConfig:
    """Settings of ``memaudit traps detect``."""

    model: str = setting(help="The model suspected of training on the documents.")
    reference: str = setting(
        help="A reference model that surely did not (e.g. the one traps came from)."
    )
    ledger: str = setting(help="The ledger `memaudit traps inject` wrote.")
    out: str = setting("runs/traps", help="Run directory.")
    overwrite: bool = overwrite_setting()
    cache_dir: str | None = setting(
        None, help="Score cache root.", default_text="$MEMAUDIT_CACHE or ~/.cache/memaudit"
    )
    no_cache: bool = setting(False, help="Score everything afresh and keep nothing.")
    docs: str | None = setting(
        None, help="The injected corpus, to score each trap after its document context."
    )
    context_chars: int = setting(
        0, help="Characters of preceding document text to condition on (needs --docs)."
    )
    dtype: str = setting("auto", help="auto, float32, bfloat16, float16.")
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    n_bootstrap: int = setting(
        1000, minimum=1, help="Bootstrap rounds for the 95% CIs (at least 1: a CI needs them)."
    )
    seed: int = setting(0, help="Seed of the bootstrap.")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if self.n_bootstrap < 1:
            raise InputError(
                f"n_bootstrap must be >= 1 (a CI needs rounds), got {self.n_bootstrap}"
            )
        if self.context_chars < 0:
            raise InputError(f"context_chars must be >= 0, got {self.context_chars}")
        if self.context_chars > 0 and self.docs is None:
            raise InputError("scoring traps in context needs the injected documents (--docs)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
