"""Settings of ``memaudit convert`` (model formats into local safetensors dirs).

Declared with ``memaudit.io.config.setting``; kept free of heavy imports, so that
``memaudit --help`` starts without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from memaudit.errors import InputError
from memaudit.io.config import overwrite_setting, setting

CONVERT_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ConvertGgufConfig:
    """Settings of ``memaudit convert gguf``; see its ``--help``."""

    file: str = setting(help="The .gguf file (any quantization).", argument=True)
    out: str = setting(help="Model dir to write: safetensors weights, config and tokenizer.")
    overwrite: bool = overwrite_setting()
    dtype: str = setting(
        "float32",
        help="float32 holds every dequantized value exactly; bfloat16 or float16 halve the size "
        "(exact for an F16/BF16 file's matrices, its float32 norms rounded).",
    )

    def __post_init__(self) -> None:
        if self.dtype not in CONVERT_DTYPES:
            raise InputError(f"unknown dtype '{self.dtype}'; use {', '.join(CONVERT_DTYPES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
