"""The corpus index: suffix arrays over a tokenized corpus, their build, duplication counts and
overlap.
"""

from .suffix import CorpusIndex, SuffixIndex

__all__ = ["CorpusIndex", "SuffixIndex"]
