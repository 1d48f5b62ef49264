"""Settings of the diffusion commands (``train``, ``memorization``, ``emm``, ``detect``,
``make-classes``).

Declared with ``memaudit.io.config.setting``; kept free of heavy imports, so that
``memaudit --help`` starts without torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from memaudit.errors import InputError
from memaudit.io.config import overwrite_setting, setting

CONDITIONINGS = ("none", "class", "random-labels")
# detect --alignment: where the second call of noise-space detection looks (see docs/diffusion.md)
ALIGNMENTS = ("pure-noise", "renoised-x0")
# detect --weights: the combined score's (g1, g2); the paper-* ones are the fixed weights of the
# authors' detect_eval.py (Asthana & Belagiannis), one pair per model they evaluated
PAPER_WEIGHTS = {
    "paper-sd1": (1.0, 2.0),  # Stable Diffusion v1.4
    "paper-sd2": (1.0, 0.1),  # Stable Diffusion v2
    "paper-rv": (2.0, 1.0),  # Realistic Vision v5.1
}
WEIGHTS = ("fitted", *PAPER_WEIGHTS)
# memorization / emm --duplicates: how copies of one training image enter the neighbour search
DUPLICATES = ("dedup", "keep")
# the authors' low timestep of A: the third-last of 50 DDIM steps (t = 41 of T = 1000)
AUTHORS_LOW_T = 0.041


def check_choice(what: str, value: str, known: tuple[str, ...]) -> None:
    """Raise an InputError naming the known choices when ``value`` is not one of ``known``."""
    if value not in known:
        raise InputError(f"unknown {what} '{value}' (known: {', '.join(known)})")


@dataclass(frozen=True)
class DiffusionTrainConfig:
    """Settings of ``memaudit diffusion train``; see its ``--help``."""

    out: str = setting(help="Model dir to write; rerunning the same command resumes a killed run.")
    overwrite: bool = overwrite_setting()
    images: str = setting(
        "digits",
        help=(
            "'digits' (scikit-learn's bundled 8x8 digits) or a folder of images (class subfolders "
            "give labels)."
        ),
    )
    n: int | None = setting(
        None, default_text="all of them", help="Training images, class-balanced."
    )
    conditioning: str = setting("none", help="none, class (the source's labels) or random-labels.")
    classes: int | None = setting(
        None, default_text="10", help="Number of random labels (random-labels only)."
    )  # random-labels: how many labels (default 10); class: taken from the source
    steps: int = setting(3000, help="Optimizer steps.")
    batch_size: int = setting(128, help="Images per step (drawn with replacement from the N).")
    lr: float = setting(2e-3, help="AdamW learning rate.")
    width: int = setting(32, help="UNet channels at full resolution (multiple of 8).")
    label_dropout: float = setting(
        0.1, help="Classifier-free guidance: share of steps trained with the null label."
    )
    checkpoints: int = setting(
        4, help="Checkpoints kept, evenly spaced (the replication ratio is measured at each)."
    )  # evenly spaced over the run, the last one at the final step
    resize: int | None = setting(
        None,
        help="Resize every image to SIZE x SIZE (needed when a folder's images differ in size).",
    )
    seed: int = setting(0, help="Seed of the subset, labels, initialization and batches.")

    def __post_init__(self):
        check_choice("conditioning", self.conditioning, CONDITIONINGS)
        if self.classes is not None and self.conditioning != "random-labels":
            raise InputError(
                "--classes is only for --conditioning random-labels (class conditioning uses the "
                "source's classes)"
            )
        if (
            self.steps < 1
            or self.batch_size < 1
            or (self.n is not None and self.n < 1)
            or self.checkpoints < 1
            or self.lr <= 0
        ):
            raise InputError("steps, batch_size, n and checkpoints must be >= 1 and lr > 0")
        if not 0 <= self.label_dropout < 1:
            raise InputError("label_dropout must lie in [0, 1)")
        if self.width % 8:
            raise InputError("width must be a multiple of 8 (GroupNorm uses 8 groups)")

    def to_dict(self) -> dict:
        return asdict(self)

    def _settings(self) -> dict:
        """Every setting but --overwrite, which only says where the run may write."""
        return {k: v for k, v in asdict(self).items() if k != "overwrite"}

    def identity(self) -> str:
        return hashlib.sha256(
            json.dumps({**self._settings(), "out": None}, sort_keys=True).encode()
        ).hexdigest()[:16]

    def checkpoint_steps(self) -> list[int]:
        return sorted(
            {
                max(1, round(self.steps * (i + 1) / self.checkpoints))
                for i in range(self.checkpoints)
            }
        )


@dataclass(frozen=True)
class MemorizationConfig:
    model: str = setting(help="Model dir from `memaudit diffusion train`.")
    train: str | None = setting(
        None,
        default_text="the exact images the model trained on",
        help="Training images to search: 'digits' or a folder.",
    )  # None: the exact images the model trained on
    samples: int = setting(1000, help="Images generated per checkpoint.")
    sampling_steps: int = setting(50, help="DDIM steps per image.")
    guidance: float = setting(
        1.0, help="Classifier-free guidance weight (conditional models; 1 = plain conditional)."
    )
    duplicates: str = setting(
        "dedup",
        help=(
            "dedup: each distinct training image is searched once (memaudit); keep: every copy, "
            "as DiffMemorize's mem_ratio.py (a copy of a duplicated image then has d1 = d2)."
        ),
    )
    seed: int = setting(0, help="Seed of the noise and the sampled labels.")
    out: str = setting("runs/diffusion-memorization", help="Run directory.")
    overwrite: bool = overwrite_setting()
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if self.samples < 1 or self.sampling_steps < 1:
            raise InputError("samples and sampling_steps must be >= 1")
        check_choice("duplicates", self.duplicates, DUPLICATES)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DetectConfig:
    model: str = setting(
        help=(
            "A conditional model dir from `memaudit diffusion train`, or a local "
            "Stable-Diffusion-style dir (needs memaudit[diffusion])."
        )
    )
    prompts: str = setting(
        help="One prompt per line (class ids for our models), or JSONL with a 'prompt' field."
    )
    labels: str = setting(
        help=(
            "One 0/1 per line (1 = memorized), or JSONL with a 'label' field; same order as "
            "--prompts."
        )
    )
    noises: int = setting(4, help="Pure-noise draws per prompt.")
    guidance: float = setting(
        3.0,
        help="Guidance weight of the baseline's steps (and of x0's prediction for renoised-x0).",
    )
    alignment: str = setting(
        "pure-noise",
        help=(
            "pure-noise: A from the same pure noise x_T at the low timestep (the authors' code); "
            "renoised-x0: at x0 predicted from x_T, noised again (memaudit's earlier variant, "
            "reported as alignment_renoised_x0)."
        ),
    )
    low_t: float = setting(
        AUTHORS_LOW_T,
        help="Timestep of the alignment feature A, as a share of T (the authors': 41 of 1000).",
    )
    weights: str = setting(
        "fitted",
        help=(
            "The combined score's (g1, g2): fitted (logistic regression, two-fold cross-fitted, "
            "metrics per half, averaged) or the authors' fixed paper-sd1 (1, 2), paper-sd2 "
            "(1, 0.1), paper-rv (2, 1)."
        ),
    )
    wen_steps: int = setting(
        5, help="DDIM steps of the Wen et al. baseline (mean guidance norm over them)."
    )
    seed: int = setting(0, help="Seed of the noise, the folds and the bootstrap.")
    out: str = setting("runs/diffusion-detect", help="Run directory.")
    overwrite: bool = overwrite_setting()
    device: str = setting("cpu", help="cpu or cuda (diffusers models).")
    n_bootstrap: int = setting(
        1000, minimum=1, help="Bootstrap rounds for the 95% CIs (at least 1: a CI needs them)."
    )
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if self.noises < 1 or not 0 < self.low_t < 1 or self.wen_steps < 1:
            raise InputError("noises and wen_steps must be >= 1 and low_t in (0, 1)")
        check_choice("alignment", self.alignment, ALIGNMENTS)
        check_choice("weights", self.weights, WEIGHTS)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EMMConfig:
    """Settings of ``memaudit diffusion emm``; see its ``--help``."""

    images: str = setting("digits", help="'digits' or a folder of images.")
    sizes: tuple[int, ...] = setting(
        (10, 20, 30, 50, 100, 200), help="Training-set sizes, one model each."
    )
    conditionings: tuple[str, ...] = setting(
        ("none", "class", "random-labels"),
        flag="--conditioning",
        help="Conditionings to compare, comma separated.",
    )
    classes: int = setting(10, help="Number of random labels.")  # labels of the random-label models
    steps: int = setting(2000, help="Optimizer steps per model (the same budget for every size).")
    batch_size: int = setting(128, help="Images per step.")
    width: int = setting(16, help="UNet width.")
    checkpoints: int = setting(
        4, help="Checkpoints kept per model, evenly spaced (R is the max over them)."
    )
    samples: int = setting(500, help="Images generated per checkpoint.")
    sampling_steps: int = setting(50, help="DDIM steps per generated image.")
    duplicates: str = setting(
        "dedup",
        help=(
            "dedup: each distinct training image is searched once (memaudit); keep: every copy, "
            "as DiffMemorize's mem_ratio.py (a copy of a duplicated image then has d1 = d2)."
        ),
    )
    seed: int = setting(0, help="Seed of subsets, labels, training and sampling.")
    workers: int = setting(
        0, help="Models trained at once (0: one per CPU core)."
    )  # 0: one per CPU core
    out: str = setting("runs/emm", help="Run directory (models under models/; a rerun resumes).")
    overwrite: bool = overwrite_setting()
    report: bool = setting(True, flag="--no-report", negate=True, help="Skip report.html.")

    def __post_init__(self):
        if not self.sizes or min(self.sizes) < 2:
            raise InputError("sizes must be a non-empty list of training-set sizes >= 2")
        for c in self.conditionings:
            check_choice("conditioning", c, CONDITIONINGS)
        check_choice("duplicates", self.duplicates, DUPLICATES)
        if self.samples < 1 or self.workers < 0:
            raise InputError("samples must be >= 1 and workers >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    def jobs(self) -> list[tuple[str, int]]:
        return [(c, n) for c in self.conditionings for n in sorted(set(self.sizes))]


@dataclass(frozen=True)
class MakeClassesConfig:
    """Settings of ``memaudit diffusion make-classes``."""

    out: str = setting(
        help="New folder: one subfolder per class, plus prompts.txt and labels.txt for `detect`."
    )
    images: str = setting(
        "digits", help="Source images ('digits' or a folder with class subfolders)."
    )
    few: int = setting(
        20, help="Classes holding a single image, duplicated --copies times (memorized by design)."
    )
    many: int = setting(20, help="Classes holding --many-images images of one source class each.")
    many_images: int = setting(30, help="Images per 'many' class.")
    copies: int = setting(10, help="Copies of each 'few' class's image.")
    seed: int = setting(0, help="Seed of the image choice.")
