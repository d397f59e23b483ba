"""The billing rules: pure functions of a visit's charges and the rule pack in force."""

from __future__ import annotations


def compiled() -> bool:
    """Whether the rules core runs as mypyc-compiled extension modules (setup.py,
    CHARGE_CAPTURE_COMPILE=1) rather than from its .py sources."""
    from rules import engine

    return not (engine.__file__ or "").endswith(".py")
