"""Settings of ``unlearn`` and ``unlearn-eval``.

Declared with ``memaudit.io.config.setting``; kept free of heavy imports, so that
``memaudit --help`` starts without torch.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from memaudit.errors import InputError
from memaudit.io.config import overwrite_setting, setting

if TYPE_CHECKING:
    from .loop import LoopSettings


@dataclass(frozen=True)
class UnlearnConfig:
    """Settings of ``memaudit unlearn``; see ``memaudit unlearn --help``."""

    model: str = setting(help="Model dir to unlearn from (never written).")
    forget: str = setting(help="Texts to remove: .jsonl, .txt, .parquet or a folder.")
    out: str = setting(help="New model dir to write.")
    overwrite: bool = overwrite_setting()
    method: str = setting(
        "npo",
        help="ga, grad_diff, npo, simnpo, wga, idk_dpo, rmu, or kfac (the curvature edit).",
    )
    retain: str | None = setting(
        None,
        help=(
            "Data to keep: 'stdlib', a folder, .jsonl, .txt or .parquet (grad_diff, rmu and kfac "
            "need it; npo, simnpo, wga and idk_dpo add its NLL)."
        ),
    )
    retain_chars: int | None = setting(
        200_000,
        minimum=1,
        help="Use only the first documents of --retain up to this many characters.",
    )
    skip_invalid: bool = setting(
        False,
        help="Leave out invalid --forget and --retain records (listed in memaudit_unlearn.json) "
        "instead of stopping at the first.",
    )
    steps: int = setting(30, help="Optimizer steps (gradient methods).")
    lr: float = setting(5e-4, help="Learning rate (constant, AdamW).")
    batch_size: int = setting(16, help="Forget sequences per step.")
    retain_batch_size: int = setting(16, help="Retain windows per step.")
    seq_len: int = setting(128, help="Tokens per retain window.")
    beta: float | None = setting(
        None,
        help="Inverse temperature of npo (default 0.1), simnpo (2.5) and idk_dpo (0.1); wga's "
        "weight exponent (1.0).",
    )
    gamma: float = setting(
        0.0,
        help="simnpo's margin in nats per token, as in the authors' code (the paper's gamma is "
        "beta times this).",
    )
    retain_weight: float = setting(1.0, help="Weight of the retain NLL term.")
    rho: float = setting(
        0.8, help="kfac: share of the curvature mass to keep (1 keeps the weights as they are)."
    )
    layers: str = setting(
        "all", help="kfac: 'all' or block indices ('2,3') whose MLP weights are edited."
    )
    kfac_batches: int = setting(16, help="kfac: retain batches the curvature is measured on.")
    idk_answers: tuple[str, ...] = setting(
        (" [redacted]", " I don't know.", " I can't share that.", " [unknown]"),
        flag="--idk-answer",
        repeat=True,
        help="idk_dpo: a placeholder answer (repeat for several; one is drawn per text with the "
        "seed), preferred after each forget text's prompt (its 'prefix' field, else its first "
        "half).",
    )
    rmu_layer: int | None = setting(
        None,
        default_text="the middle block, (layers - 1) // 2",
        help="rmu: the block whose output is steered; the MLP output projections of it and the "
        "two blocks below are the only weights trained.",
    )
    rmu_steering: float = setting(
        20.0, help="rmu: the steering coefficient c (forget activations are pushed to c u)."
    )
    rmu_alpha: float = setting(
        100.0, help="rmu: weight of the retain term (retain activations kept as the original's)."
    )
    save_every: int = setting(
        0, help="Also save the model every N steps (out/step-*), for unlearn-eval's calibration."
    )
    lora_rank: int = setting(
        0,
        help="Train a LoRA adapter of this rank instead of every weight (0: off; needs "
        "memaudit[peft]); the output is still the merged model.",
    )
    lora_alpha: float | None = setting(
        None,
        default_text="2 x rank",
        help="LoRA scaling numerator: the update is (alpha / rank) B A.",
    )
    lora_targets: str = setting(
        "auto",
        help="Comma list of module names LoRA adapts; 'auto': every linear (or GPT-2 Conv1D) "
        "layer of the blocks, the output head excepted.",
    )
    keep_adapter: bool = setting(
        False, help="Also write the trained adapter to OUT/adapter (loads with --adapter)."
    )
    eval_every: int = setting(
        0,
        help="Measure forget extraction and NLL, MIA (with --holdout) and retain NLL every N "
        "steps, at step 0 and at the end (OUT/eval.jsonl); 0: off.",
    )
    holdout: str | None = setting(
        None,
        help="Texts like the forget set but never trained on, for --eval-every's MIA AUC "
        "(without it MIA is skipped).",
    )
    eval_prefix_tokens: int = setting(
        32,
        help="--eval-every: prompt length of forget texts without a prefix field (at most half "
        "the text), as unlearn-eval's --prefix-tokens.",
    )
    eval_suffix_tokens: int = setting(
        32, help="--eval-every: continuation tokens compared, as unlearn-eval's --suffix-tokens."
    )
    eval_retain_windows: int = setting(
        32, help="--eval-every: fixed retain windows (of --seq-len tokens) the retain NLL is on."
    )
    seed: int = setting(0, help="Seed of batch order and retain windows.")
    device: str = setting("auto", help="auto, cpu, cuda, ...")

    def __post_init__(self):
        from .methods import EDIT_METHODS, METHODS

        if self.method not in EDIT_METHODS:
            METHODS.get(self.method)  # "did you mean" for an unknown name
        if not (math.isfinite(self.rho) and 0 < self.rho <= 1):
            raise InputError(f"--rho must be in (0, 1], got {self.rho}")
        if self.save_every < 0 or self.kfac_batches < 1:
            raise InputError("save_every must be >= 0 and kfac_batches >= 1")
        if not self.idk_answers or not all(a.strip() for a in self.idk_answers):
            raise InputError("--idk-answer must not be empty")
        if self.rmu_layer is not None and self.rmu_layer < 0:
            raise InputError(f"--rmu-layer must be >= 0, got {self.rmu_layer}")
        if not (math.isfinite(self.rmu_steering) and self.rmu_steering > 0):
            raise InputError(f"--rmu-steering must be a positive number, got {self.rmu_steering}")
        if not (math.isfinite(self.rmu_alpha) and self.rmu_alpha >= 0):
            raise InputError(f"--rmu-alpha must be a number >= 0, got {self.rmu_alpha}")
        self._check_lora()
        self._check_eval()
        self.loop_settings()

    def _check_lora(self) -> None:
        if self.lora_rank < 0:
            raise InputError(f"lora_rank must be >= 0 (0: off), got {self.lora_rank}")
        if not self.lora_rank:
            if self.lora_alpha is not None or self.lora_targets != "auto" or self.keep_adapter:
                raise InputError("--lora-alpha, --lora-targets and --keep-adapter need --lora-rank")
            return
        from .methods import EDIT_METHODS, METHODS

        if self.method in EDIT_METHODS:
            raise InputError(
                "kfac edits the weights directly and trains nothing: it cannot use --lora-rank"
            )
        if METHODS.get(self.method).needs_activations:
            raise InputError(
                f"{self.method} trains chosen base weights (the MLP output projections it steers "
                "through): it cannot use --lora-rank"
            )
        if self.lora_alpha is not None and not (
            math.isfinite(self.lora_alpha) and self.lora_alpha > 0
        ):
            raise InputError(f"lora_alpha must be a positive number, got {self.lora_alpha}")
        if not [t for t in self.lora_targets.split(",") if t.strip()]:
            raise InputError("--lora-targets names no module")
        if importlib.util.find_spec("peft") is None:
            raise InputError(
                "--lora-rank needs peft, which is not installed: pip install 'memaudit[peft]'"
            )

    def _check_eval(self) -> None:
        if self.eval_every < 0:
            raise InputError(f"eval_every must be >= 0 (0: off), got {self.eval_every}")
        if not self.eval_every:
            if self.holdout is not None:
                raise InputError("--holdout is read by --eval-every only; give both or neither")
            return
        from .methods import EDIT_METHODS

        if self.method in EDIT_METHODS:
            raise InputError("--eval-every measures along training steps; kfac takes none")
        if min(self.eval_prefix_tokens, self.eval_suffix_tokens, self.eval_retain_windows) < 1:
            raise InputError(
                "eval_prefix_tokens, eval_suffix_tokens and eval_retain_windows must be >= 1"
            )

    @property
    def alpha(self) -> float:
        """The LoRA alpha used: ``--lora-alpha``, else twice the rank."""
        return float(self.lora_alpha) if self.lora_alpha is not None else 2.0 * self.lora_rank

    def loop_settings(self) -> LoopSettings:
        from .loop import LoopSettings

        return LoopSettings(
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size,
            retain_batch_size=self.retain_batch_size,
            seq_len=self.seq_len,
            beta=self.beta,
            gamma=self.gamma,
            retain_weight=self.retain_weight,
            seed=self.seed,
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class UnlearnEvalConfig:
    """Settings of ``memaudit unlearn-eval``; see its ``--help``."""

    original: str = setting(help="The model before unlearning.")
    forget: str = setting(
        help="The forget set (a 'prefix' field, as in canary ledgers, sets the prompt)."
    )
    holdout: str = setting(
        help="Texts like the forget set but never trained on (e.g. the canaries' twins)."
    )
    retain: str = setting(
        help="Trained-on data to keep: 'stdlib', a folder, .jsonl, .txt or .parquet."
    )
    unlearned: tuple[str, ...] = setting(
        (), repeat=True, help="An unlearned model dir (repeat for several methods)."
    )
    retrained: str | None = setting(
        None, help="A model trained from scratch without the forget set."
    )
    retrain: bool = setting(
        False, help="Train that model now, with the original's own `memaudit train` settings."
    )
    general: str | None = setting(
        None, help="Held-out corpus for general NLL (e.g. `memaudit corpus snippets` output)."
    )
    retain_chars: int | None = setting(
        200_000,
        minimum=1,
        help="Use only the first documents of --retain up to this many characters.",
    )
    skip_invalid: bool = setting(
        False,
        help="Leave out invalid records of --retain and --general (listed in results.json) "
        "instead of stopping at the first.",
    )
    eval_texts: int = setting(200, help="Retain and general texts measured.")
    chunk_chars: int = setting(
        400, help="Retain and general documents are cut into texts of about this many characters."
    )
    prefix_tokens: int = setting(32, help="Prompt length for forget texts without a prefix field.")
    suffix_tokens: int = setting(32, help="Continuation tokens compared.")
    relearn_steps: int = setting(10, help="Fine-tuning steps of the relearning attack (0: skip).")
    relearn_lr: float = setting(1e-3, help="Learning rate of the relearning attack.")
    quant_bits: str = setting(
        "8,4",
        help="Quantization attack: bit widths each model is re-measured at (round-to-nearest, "
        "group-wise); '' or 'none' skips it.",
    )
    quant_group_size: int = setting(
        128,
        minimum=1,
        help="Quantization attack: consecutive input weights sharing one grid (a shorter row is "
        "one group).",
    )
    retain_budget: float = setting(
        0.1, help="Calibration: the retain NLL increase (nats/token) methods are compared within."
    )
    n_bootstrap: int = setting(
        1000, minimum=1, help="Bootstrap rounds for the 95% CIs (at least 1: a CI needs them)."
    )
    seed: int = setting(0, help="Seed of the forget-set halves and the bootstrap.")
    out: str = setting("runs/unlearn-eval", help="Run directory.")
    overwrite: bool = overwrite_setting()
    cache_dir: str | None = setting(None, help="Score cache root.")
    no_cache: bool = setting(False, help="Keep no scores on disk.")
    device: str = setting("auto", help="auto, cpu, cuda, ...")
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if self.retrain and self.retrained:
            raise InputError("give --retrained DIR or --retrain, not both")
        if self.eval_texts < 2 or self.relearn_steps < 0 or self.retain_budget < 0:
            raise InputError("eval_texts must be >= 2, relearn_steps and retain_budget >= 0")
        parse_quant_bits(self.quant_bits)

    def bit_widths(self) -> tuple[int, ...]:
        """The quantization attack's bit widths, in the order given."""
        return parse_quant_bits(self.quant_bits)

    def to_dict(self) -> dict:
        return asdict(self)


QUANT_BITS = range(2, 9)  # below 2 bits nothing is left; above 8 the grid is finer than bf16's


def parse_quant_bits(text: str) -> tuple[int, ...]:
    """``"8,4"`` -> ``(8, 4)``; ``""`` or ``"none"`` -> ``()``.

    >>> parse_quant_bits("8, 4"), parse_quant_bits("none")
    ((8, 4), ())
    """
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        bits = tuple(int(b) for b in text.split(","))
    except ValueError:
        bits = ()
    if not bits or any(b not in QUANT_BITS for b in bits) or len(set(bits)) < len(bits):
        raise InputError(
            f"quant_bits must be distinct bit widths from 2 to 8 like '8,4' (or 'none'), "
            f"got '{text}'"
        )
    return bits
