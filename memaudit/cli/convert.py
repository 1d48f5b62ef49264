"""``memaudit convert gguf``: other model formats as local safetensors dirs."""

from __future__ import annotations

import typer

from memaudit.models.config import ConvertGgufConfig

from .common import config_command, out_console

convert_app = typer.Typer(
    no_args_is_help=True,
    help="Convert a model file (GGUF) into a local safetensors dir that every command loads.",
)


@config_command(convert_app, "gguf", ConvertGgufConfig)
def convert_gguf(cfg: ConvertGgufConfig) -> None:
    """Dequantize a GGUF file (llama.cpp) into a safetensors model dir with its tokenizer.

    transformers reads the file; the dir gets config.json, model.safetensors, the tokenizer
    built from the file's metadata, and memaudit_convert.json recording that the weights are
    dequantized, from which file (sha256) and which tensor types. Needs the 'gguf' extra.
    """
    from memaudit.models.gguf import RECORD, convert_gguf

    out = convert_gguf(cfg)
    out_console.print(f"dequantized {cfg.file} -> {out} (see {out / RECORD})")
