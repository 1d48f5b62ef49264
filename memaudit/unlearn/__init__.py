"""Unlearning: remove memorized sequences (``run``), and prove they are gone (``evaluate``)."""

from .methods import METHODS, Method, StepInputs

__all__ = ["METHODS", "Method", "StepInputs"]
