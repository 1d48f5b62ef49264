"""The scoring engine: one forward pass per text per model, cached on disk, as per-token
``TokenScores``.
"""

from .engine import ScoreSettings, ScoreStats, score_texts
from .tokenscores import TextScores, TokenScores

__all__ = ["ScoreSettings", "ScoreStats", "TextScores", "TokenScores", "score_texts"]
