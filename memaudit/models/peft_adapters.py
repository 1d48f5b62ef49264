"""PEFT adapters (LoRA and its kin) on a base model: checked, loaded, and merged into the base.

Merged on load, once: ``merge_and_unload`` folds each low-rank update into the weight it
adapts, so the model memaudit scores is a plain transformers model again. Scoring then costs
what the base costs (no extra matmuls per layer), the chunked vocabulary projection applies
unchanged, and the numbers are those of the merged model a user would save with
``merge_and_unload().save_pretrained(...)``. The price is one pass over the adapted weights at
load and no way to switch adapters without reloading (memaudit never needs to).

Rules, as for base models: a local directory only, safetensors only
(``adapter_model.safetensors``; ``adapter_model.bin`` is refused), ``adapter_config.json`` read
first. A base that does not fit (another model named in the config, target modules or shapes
not found, adapted tensors missing from the file) is a one-line :class:`ModelLoadError`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from memaudit.errors import ModelLoadError

from .weights import check_safetensors

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PICKLED = ("adapter_model.bin", "adapter_model.pt")


def check_adapter_dir(path: Path, base_dir: Path) -> dict:
    """The adapter's ``adapter_config.json`` after the checks that need no weights.

    Raises
    ------
    ModelLoadError
        Not a local directory, no ``adapter_config.json`` or no safetensors weights, an adapter
        kind that cannot be merged (prompt learning), a base other than ``base_dir`` named in the
        config, or peft not installed.
    """
    if not path.is_dir():
        raise ModelLoadError(
            f"{path}: not a local adapter directory; adapters load from local directories only"
        )
    if not (path / CONFIG).is_file():
        raise ModelLoadError(f"{path}: no {CONFIG}; not a PEFT adapter directory")
    if not (path / WEIGHTS).is_file():
        pickles = [name for name in PICKLED if (path / name).is_file()]
        found = f" (found {', '.join(pickles)}: pickle weights are never loaded)" if pickles else ""
        raise ModelLoadError(f"{path}: no {WEIGHTS}{found}")
    check_safetensors([path / WEIGHTS])
    config = read_adapter_config(path)
    _check_named_base(config, path, base_dir)
    try:
        from peft import PeftConfig
    except ImportError:
        raise ModelLoadError(
            "--adapter needs peft, which is not installed: pip install 'memaudit[peft]'"
        ) from None
    try:
        peft_config = PeftConfig.from_pretrained(str(path))
    except (ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{path / CONFIG}: not a PEFT config ({_line(e)})") from e
    if peft_config.is_prompt_learning:
        raise ModelLoadError(
            f"{path}: a {peft_config.peft_type} adapter adds virtual tokens and cannot be merged "
            "into the base; memaudit loads adapters that merge (LoRA and its kin)"
        )
    return config


def merge_adapter(model: Any, adapter_dir: Path, base_dir: Path) -> Any:
    """``model`` with the adapter in ``adapter_dir`` loaded and merged into its weights.

    Raises
    ------
    ModelLoadError
        The adapter's target modules are not in the base, its shapes differ, or the base has
        adapted tensors the file does not hold (or the other way round).
    """
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    where = f"{adapter_dir}: does not fit the base {base_dir}"
    try:
        with warnings.catch_warnings():
            # peft warns of missing keys; they are compared below, into one error
            warnings.simplefilter("ignore")
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as e:
        raise ModelLoadError(f"{where} ({_line(e)})") from e
    with safe_open(str(adapter_dir / WEIGHTS), "pt") as fh:
        stored = set(fh.keys())
    expected = set(get_peft_model_state_dict(peft_model))
    gaps = ((expected - stored, "the file lacks"), (stored - expected, "the base lacks"))
    for missing, side in gaps:
        if missing:
            raise ModelLoadError(
                f"{where} ({len(missing)} adapted tensor(s) {side}, e.g. {min(missing)})"
            )
    try:
        return peft_model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError) as e:
        raise ModelLoadError(f"{adapter_dir}: cannot be merged into the base ({_line(e)})") from e


def _check_named_base(config: dict, adapter_dir: Path, base_dir: Path) -> None:
    """The base named in the config must be ``base_dir``: the same local directory, or a hub id
    or path whose last part is ``base_dir``'s name (``meta-llama/Llama-3.2-1B`` for
    ``models/Llama-3.2-1B``). An adapter saved without a name is checked by its shapes alone.
    """
    named = config.get("base_model_name_or_path")
    if not named:
        return
    if not isinstance(named, str):
        raise ModelLoadError(f"{adapter_dir / CONFIG}: base_model_name_or_path is not a string")
    given = base_dir.resolve()
    local = Path(named).expanduser()
    if local.is_dir():
        same = local.resolve() == given
    else:
        same = Path(named.rstrip("/")).name.lower() == given.name.lower()
    if not same:
        raise ModelLoadError(
            f"{adapter_dir}: adapter_config.json names base '{named}', not {base_dir}; pass that "
            f"model, or if {base_dir} is a copy of it, set base_model_name_or_path to its path"
        )


def read_adapter_config(adapter_dir: Path) -> dict:
    try:
        config = json.loads((adapter_dir / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{adapter_dir / CONFIG}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise ModelLoadError(f"{adapter_dir / CONFIG}: not a JSON object")
    return config


def _line(e: Exception) -> str:
    """The informative line of a loader's error: torch's state-dict errors put it second."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("size mismatch", "Missing key", "Unexpected key")):
            return line
    return lines[0] if lines else type(e).__name__
