"""What an option is (a flag, a CHARGE_CAPTURE_* variable, a WorkerConfig field) and how a
group of them is put on a parser and read back; worker.cli.options declares them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from worker.cli import values
from worker.config import WorkerConfig

ENV_PREFIX = "CHARGE_CAPTURE_"


class UsageError(ValueError):
    """A bad option value or combination: reported like argparse's own errors (exit 2)."""


@dataclass(frozen=True)
class Option:
    """One setting: `field` is its WorkerConfig attribute ("security.x" for a nested one)."""

    field: str
    help: str
    parse: values.Parse = values.text
    flag: str | None = None  # default: --FIELD (its last part, dashed)
    metavar: str | None = None
    default: str | None = None  # the default as --help says it; None: the dataclass default
    aliases: tuple[str, ...] = ()  # deprecated spellings: accepted, hidden, warned about
    variable: str | None = None  # default: CHARGE_CAPTURE_ + the flag, upper-cased
    switch: bool = False  # an on/off flag: --x and --no-x; its variable true or false

    @property
    def option_string(self) -> str:
        return self.flag or "--" + self.field.rpartition(".")[2].replace("_", "-")

    @property
    def dest(self) -> str:
        return self.option_string.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return self.variable or ENV_PREFIX + self.dest.upper()


@dataclass(frozen=True)
class Group:
    title: str
    options: tuple[Option, ...]

    def pick(self, *names: str) -> Group:
        """The options of this group named by their fields (for a verb using only some)."""
        chosen = tuple(o for o in self.options if o.field in names or o.dest in names)
        missing = set(names) - {o.field for o in chosen} - {o.dest for o in chosen}
        assert not missing, f"no option {sorted(missing)} in group {self.title!r}"
        return Group(self.title, chosen)


class _Deprecated(argparse.Action):
    """A hidden old spelling: stores into the option's dest and says what to use instead."""

    def __init__(self, *args: Any, replacement: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replacement = replacement

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        value: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"{parser.prog}: {option_string} is deprecated; use {self.replacement}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, value)


def _default_text(option: Option) -> str:
    if option.default is not None:
        return option.default
    owner: Any = WorkerConfig()
    for part in option.field.split("."):
        owner = getattr(owner, part)
    return str(owner.value if hasattr(owner, "value") else owner)


def _metavar(option: Option) -> str:
    for suffix, metavar in (
        ("_ms", "MS"),
        ("_days", "DAYS"),
        ("_s", "SECONDS"),
        ("_topic", "TOPIC"),
    ):
        if option.dest.endswith(suffix):
            return metavar
    return "N" if getattr(option.parse, "__name__", "") == "integer" else "NAME"


def add_groups(parser: argparse.ArgumentParser, groups: Iterable[Group]) -> None:
    """Each group's flags under its title, each saying its default and variable."""
    for group in groups:
        section = parser.add_argument_group(group.title)
        for option in group.options:
            if option.switch:
                section.add_argument(
                    option.option_string,
                    dest=option.dest,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=f"{option.help} (default: {_default_text(option)}; env {option.env})",
                )
                continue
            section.add_argument(
                option.option_string,
                dest=option.dest,
                type=option.parse,
                default=None,
                metavar=option.metavar or _metavar(option),
                help=f"{option.help} (default: {_default_text(option)}; env {option.env})",
            )
            for alias in option.aliases:
                section.add_argument(
                    alias,
                    dest=option.dest,
                    type=option.parse,
                    default=None,
                    help=argparse.SUPPRESS,
                    action=_Deprecated,
                    replacement=option.option_string,
                )


def apply_environment(args: argparse.Namespace, options: Iterable[Option]) -> None:
    """Fill every option not given as a flag from its variable, parsed like the flag."""
    for option in options:
        if getattr(args, option.dest, None) is not None:
            continue
        raw = os.environ.get(option.env)
        if raw is None or (raw == "" and option.parse is not values.text):
            continue  # an empty variable is unset (an empty flag value is not)
        parse = values.boolean if option.switch else option.parse
        try:
            setattr(args, option.dest, parse(raw))
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"{option.env}={raw!r}: {error}") from None


def fill(config: WorkerConfig, args: argparse.Namespace, options: Iterable[Option]) -> None:
    """Set each option's field of `config` that `args` has a value for."""
    for option in options:
        value = getattr(args, option.dest, None)
        if value is None:
            continue
        owner: Any = config
        *path, name = option.field.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, value)
