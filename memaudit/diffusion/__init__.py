"""Diffusion-model memorization: a small DDPM trainer, the replication ratio, EMM and noise-space
detection.

Images are uint8 arrays shaped (N, C, H, W); models see them scaled to [-1, 1]. Distances
follow Gu et al.: ``||x - y||_2 / sqrt(C*H*W)`` on the 0..255 scale.
"""
