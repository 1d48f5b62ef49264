"""Membership-inference attacks: pure functions over TokenScores, registered by name.

Importing this package registers every attack. Higher score = more likely a member.
"""

from . import calibrated, reference_free, sampled  # noqa: F401  (registration side effect)
from .base import ATTACKS, Attack, AttackInputs, AttackSpec, parse_attacks, register

__all__ = ["ATTACKS", "Attack", "AttackInputs", "AttackSpec", "parse_attacks", "register"]
