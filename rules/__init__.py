"""The billing rules: pure functions of a visit's charges and the rule pack in force."""

from __future__ import annotations


def compiled() -> bool:
    """Whether the rules core (the rules and the processing path and visit state that run
    them, setup.py's COMPILED) runs as mypyc-compiled extension modules rather than from its
    .py sources. They are compiled together or not at all, so rules.engine stands for all."""
    from rules import engine

    return not (engine.__file__ or "").endswith(".py")
