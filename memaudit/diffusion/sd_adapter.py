"""Noise-space detection on a local Stable-Diffusion-style directory, through diffusers.

Reads only what detection needs, from local files, safetensors only: ``unet/``,
``text_encoder/`` (CLIP), ``tokenizer/`` and ``scheduler/``. The VAE is never used: the
scores live in latent space. Needs the optional extra ``memaudit[diffusion]``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from memaudit.errors import InputError


class DiffusersAdapter:
    """``eps_pair`` over text prompts for a UNet2DConditionModel with a CLIP text encoder."""

    def __init__(self, path, *, device: str = "cpu"):
        try:
            from diffusers import DDPMScheduler, UNet2DConditionModel
        except ImportError:
            raise InputError(
                f"{path} is a diffusers pipeline; install the extra: pip install "
                "'memaudit[diffusion]'"
            ) from None
        from transformers import CLIPTextModel, CLIPTokenizer

        root = Path(path)
        for part in ("unet", "text_encoder", "tokenizer", "scheduler"):
            if not (root / part).is_dir():
                raise InputError(
                    f"{root}: no {part}/ folder; expected a Stable-Diffusion-style pipeline "
                    "directory"
                )
        self.device = torch.device(device)
        self.unet = (
            UNet2DConditionModel.from_pretrained(
                root / "unet", use_safetensors=True, local_files_only=True
            )
            .to(self.device)
            .eval()
        )
        self.text_encoder = (
            CLIPTextModel.from_pretrained(
                root / "text_encoder", use_safetensors=True, local_files_only=True
            )
            .to(self.device)  # type: ignore[arg-type]  # transformers' stub wants a model
            .eval()
        )
        self.tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(root / "scheduler", local_files_only=True)
        self.prediction = scheduler.config.prediction_type
        if self.prediction not in ("epsilon", "v_prediction"):
            raise InputError(
                f"{root}: prediction type '{self.prediction}' is not supported (epsilon or "
                "v_prediction)"
            )
        self.T = scheduler.config.num_train_timesteps
        self.abar = scheduler.alphas_cumprod.float()
        size = self.unet.config.sample_size
        self.shape = (self.unet.config.in_channels, size, size)
        self.root = root
        self._null = self._embed([""])

    def describe(self) -> dict:
        return {
            "path": str(self.root),
            "fingerprint": pipeline_fingerprint(self.root),
            "architecture": "diffusers pipeline",
            "n_params": sum(
                p.numel() for m in (self.unet, self.text_encoder) for p in m.parameters()
            ),
            "dtype": str(self.unet.dtype).removeprefix("torch."),
            "device": str(self.device),
            "prediction_type": self.prediction,
        }

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tok.input_ids.to(self.device))[0]  # (B, L, D)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return torch.cat([self._embed(prompts[i : i + 32]) for i in range(0, len(prompts), 32)])

    @torch.no_grad()
    def eps_pair(
        self, x: torch.Tensor, t: int, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device)
        hidden = torch.cat([self._null.expand(len(x), -1, -1), cond.to(self.device)])
        out = self.unet(torch.cat([x, x]), t, encoder_hidden_states=hidden).sample.float()
        if self.prediction == "v_prediction":  # eps = sqrt(abar) v + sqrt(1 - abar) x
            a = self.abar[t].to(self.device)
            out = a.sqrt() * out + (1 - a).sqrt() * torch.cat([x, x])
        eps_null, eps_cond = out.cpu().chunk(2)
        return eps_null, eps_cond


def pipeline_fingerprint(root: Path) -> str:
    """sha256 over the configs and weights of the parts detection reads."""
    import hashlib

    from memaudit.models.hf import file_digest

    h = hashlib.sha256()
    for part in ("unet", "text_encoder", "tokenizer", "scheduler"):
        for f in sorted((root / part).glob("*")):
            if f.suffix in (".json", ".safetensors", ".txt"):
                h.update(f"{part}/{f.name}".encode())
                h.update(file_digest(f).encode())
    return h.hexdigest()[:16]
