"""Membership-inference attacks: pure functions over TokenScores, registered by name.

Importing this package registers every attack. Higher score = more likely a member.
"""

# registration side effect
from . import calibrated, conditional, pac, reference_free, sampled, shadows  # noqa: F401
from .base import ATTACKS, Attack, AttackInputs, AttackSpec, parse_attacks, register

__all__ = ["ATTACKS", "Attack", "AttackInputs", "AttackSpec", "parse_attacks", "register"]
