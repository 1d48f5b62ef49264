"""``memaudit convert gguf``: a GGUF file (llama.cpp) as a local safetensors model dir.

transformers reads the file (``from_pretrained(dir, gguf_file=...)``: the config from its
metadata, the tokenizer from its ``tokenizer.ggml.*`` keys, every tensor dequantized); memaudit
writes the result as an ordinary model dir that its loader takes like any other, with
``memaudit_convert.json`` beside it saying that the weights are dequantized, from which file
(its sha256) and its tensor types. Scores of the converted dir are those of the dequantized
weights: what a llama.cpp run of the file computes, up to its own kernels' rounding.

Everything that can be wrong with the file (not a GGUF, an architecture transformers cannot
load, not a causal LM, a tokenizer it cannot build) fails before ``--out`` is touched; the dir is
written in a temp dir beside it and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from memaudit.errors import InputError, ModelLoadError
from memaudit.io.atomic import current_umask
from memaudit.io.outdir import prepare_out_dir, publish_dir

from .config import ConvertGgufConfig
from .hf import DTYPES

KIND = "model:gguf"
RECORD = "memaudit_convert.json"
MAGIC = b"GGUF"


def convert_gguf(config: ConvertGgufConfig) -> Path:
    """Convert ``config.file`` into the model dir ``config.out``; returns its path.

    Raises
    ------
    ModelLoadError
        The file is missing or not a GGUF, gguf or accelerate is not installed, or transformers
        cannot load its architecture (or it is not a causal LM) or build its tokenizer.
    InputError
        ``--out`` is unusable (see :func:`memaudit.io.outdir.prepare_out_dir`).
    """
    file = Path(config.file)
    architecture, tensor_types = read_gguf_header(file)
    with _staged(file) as (stage, name):
        _check_loadable(stage, name, file, architecture)
        tokenizer = _load_tokenizer(stage, name, file)
        existed = Path(config.out).exists()
        out = prepare_out_dir(config.out, kind=KIND, inputs=[file], overwrite=config.overwrite)
        digest = file_sha256(file)
        if not config.overwrite:
            _refuse_another_conversion(out, digest, config.dtype)
        try:
            tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
            try:
                model = _load_dequantized(stage, name, file, DTYPES[config.dtype])
                _save(model, tokenizer, tmp)
                record = {
                    "converted_from": str(file.resolve()),
                    "sha256": digest,
                    "architecture": architecture,
                    "dequantized": True,
                    "dtype": config.dtype,
                    "tensor_types": tensor_types,
                    "transformers": _version("transformers"),
                    "gguf": _version("gguf"),
                    "note": (
                        f"weights dequantized from {file.name} by transformers' GGUF loader and "
                        f"written as {config.dtype} safetensors"
                    ),
                }
                (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
                os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
                return publish_dir(tmp, out, KIND)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        except BaseException:
            if not existed:  # the dir prepare_out_dir made holds only its marker
                shutil.rmtree(out, ignore_errors=True)
            raise


def _refuse_another_conversion(out: Path, digest: str, dtype: str) -> None:
    """A finished conversion of another file or dtype is replaced only with --overwrite."""
    try:
        earlier = json.loads((out / RECORD).read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        earlier = {}
    if not isinstance(earlier, dict) or (earlier.get("sha256"), earlier.get("dtype")) != (
        digest,
        dtype,
    ):
        raise InputError(
            "holds a conversion of another file or dtype; choose another --out, or pass "
            "--overwrite to replace it",
            path=str(out),
        )


def read_gguf_header(file: Path) -> tuple[str, dict[str, int]]:
    """The file's ``general.architecture`` and how many tensors it stores in each ggml type."""
    if file.is_dir():
        raise ModelLoadError(f"{file}: a directory, not a .gguf file")
    if not file.is_file():
        raise ModelLoadError(f"{file}: no such file")
    with open(file, "rb") as fh:
        if fh.read(4) != MAGIC:
            raise ModelLoadError(f"{file}: not a GGUF file (it does not start with 'GGUF')")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelLoadError(
            "memaudit convert gguf needs the gguf package: pip install 'memaudit[gguf]'"
        ) from None
    try:
        reader = GGUFReader(str(file))
        field = reader.fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode("utf-8")
    except (KeyError, ValueError, IndexError, OSError) as e:
        raise ModelLoadError(f"{file}: unreadable GGUF header ({_line(e)})") from e
    types = Counter(t.tensor_type.name for t in reader.tensors)
    return architecture, dict(sorted(types.items()))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def _staged(file: Path) -> Iterator[tuple[Path, str]]:
    """A temp dir holding only a link to ``file``: transformers, given the file's own dir, could
    pick up a config.json or tokenizer that happens to lie beside it.
    """
    stage = Path(tempfile.mkdtemp(prefix="memaudit-gguf-"))
    try:
        (stage / "model.gguf").symlink_to(file.resolve())
        yield stage, "model.gguf"
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _check_loadable(stage: Path, name: str, file: Path, architecture: str) -> None:
    """transformers can read the config of this architecture, and it is a causal LM."""
    try:
        import accelerate  # noqa: F401  # transformers needs it for any GGUF load
    except ImportError:
        raise ModelLoadError(
            "memaudit convert gguf needs accelerate: pip install 'memaudit[gguf]'"
        ) from None
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        model_config = AutoConfig.from_pretrained(stage, gguf_file=name, local_files_only=True)
    except (ValueError, KeyError, OSError, TypeError) as e:
        raise ModelLoadError(
            f"{file}: transformers {_version('transformers')} cannot load GGUF architecture "
            f"'{architecture}' ({_line(e)})"
        ) from e
    if type(model_config) not in AutoModelForCausalLM._model_mapping:
        raise ModelLoadError(
            f"{file}: GGUF architecture '{architecture}' is not a causal LM "
            f"({type(model_config).__name__})"
        )


def _load_tokenizer(stage: Path, name: str, file: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(stage, gguf_file=name, local_files_only=True)
    except (ValueError, KeyError, OSError, TypeError) as e:
        raise ModelLoadError(f"{file}: cannot build its tokenizer ({_line(e)})") from e


def _load_dequantized(stage: Path, name: str, file: Path, dtype: torch.dtype) -> Any:
    """The model with every tensor dequantized into ``dtype`` (none left in GGUF blocks)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(gguf_file=name, dtype=dtype, local_files_only=True)
    try:  # transformers >= 5.x may keep quantized matrices packed unless told otherwise
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass  # older releases always dequantize
    try:
        model = AutoModelForCausalLM.from_pretrained(stage, **kwargs)
    except (ValueError, KeyError, OSError, RuntimeError, NotImplementedError) as e:
        raise ModelLoadError(f"{file}: transformers cannot load its weights ({_line(e)})") from e
    packed = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
    if packed:
        raise ModelLoadError(f"{file}: {len(packed)} tensor(s) stayed packed, e.g. {packed[0]}")
    return model


def _save(model: Any, tokenizer: Any, out: Path) -> None:
    """An ordinary safetensors dir: the GGUF quantizer's record is dropped (the weights are
    dense now, and a model loaded with it refuses to save).
    """
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
