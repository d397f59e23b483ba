"""A user's mistakes on the command line, with no broker: one line naming what is wrong and
where, a documented exit code (docs/operations.md "Exit codes (CLI)"), never a traceback.

Every test runs the console script in a subprocess, as a user would.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from importlib import metadata
from pathlib import Path

import pytest

from rules.pack import DEFAULT_PACKS_DIR
from tests.cli_process import clean_env, cli, one_line_error
from tests.factories import event_dict
from tests.worker_process import free_port
from worker.offline.jsonlines import MAX_LINE_BYTES, numbered_lines


def _line(**overrides: object) -> str:
    return json.dumps(event_dict(**overrides))


def _file(tmp_path: Path, *lines: str, name: str = "day.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


# --- check: the input file --------------------------------------------------------------------


def test_check_missing_file(tmp_path: Path) -> None:
    ran = cli("check", str(tmp_path / "nope.jsonl"))
    one_line_error(ran, 66, "charge-capture: ", "nope.jsonl: no such file")


def test_check_directory(tmp_path: Path) -> None:
    one_line_error(cli("check", str(tmp_path)), 66, str(tmp_path), "is a directory")


def test_check_binary_and_gzip_files(tmp_path: Path) -> None:
    binary = tmp_path / "day.bin"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    one_line_error(cli("check", str(binary)), 66, "day.bin: a binary file, not JSON lines")
    packed = tmp_path / "day.jsonl.gz"
    packed.write_bytes(gzip.compress((_line() + "\n").encode()))
    one_line_error(cli("check", str(packed)), 66, "day.jsonl.gz: gzip-compressed")


def test_check_output_that_cannot_be_written(tmp_path: Path) -> None:
    day = _file(tmp_path, _line())
    ran = cli("check", str(day), "--out", str(tmp_path / "no" / "such" / "dir.jsonl"))
    assert "Traceback" not in ran.stderr and ran.code == 73, ran.stderr
    assert ran.stderr.strip().splitlines()[-1].endswith("dir.jsonl: No such file or directory")


def test_check_reads_stdin() -> None:
    ran = cli("check", "-", stdin=_line() + "\n")
    assert ran.code == 0, ran.stderr
    assert json.loads(ran.stdout)["charge_id"] == "C1"


# --- check: what was decided ------------------------------------------------------------------


def test_check_with_every_line_rejected_exits_65(tmp_path: Path) -> None:
    day = _file(tmp_path, "{not json", _line(units="three"))
    ran = cli("check", str(day))
    assert ran.code == 65 and "Traceback" not in ran.stderr, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert "rejected line 1: " in lines[0] and lines[1].startswith("rejected line 2: units")
    assert lines[-1] == f"charge-capture: {day}: nothing decided: every line was rejected"
    assert ran.stdout == ""


def test_check_of_an_empty_file_exits_65(tmp_path: Path) -> None:
    day = _file(tmp_path, "", "   ")
    ran = cli("check", str(day))
    assert ran.code == 65, ran.stderr
    assert ran.stderr.strip().splitlines()[-1].endswith("nothing decided: it holds no event")


def test_check_with_some_lines_rejected_exits_0(tmp_path: Path) -> None:
    day = _file(tmp_path, _line(), "{not json")
    ran = cli("check", str(day))
    assert ran.code == 0, ran.stderr
    assert "rejected line 2: " in ran.stderr
    assert [json.loads(line)["charge_id"] for line in ran.stdout.splitlines()] == ["C1"]


def test_occurred_at_as_a_number_is_rejected_with_its_line(tmp_path: Path) -> None:
    day = _file(
        tmp_path,
        _line(),
        _line(event_id="E2", charge_id="C2", occurred_at=1772463600),  # epoch seconds
        _line(event_id="E3", charge_id="C3", occurred_at="1772463600000"),  # millis, as text
    )
    ran = cli("check", str(day))
    assert ran.code == 0, ran.stderr
    assert "rejected line 2: occurred_at: Expected `datetime`, got `int`" in ran.stderr
    assert "rejected line 3: occurred_at: Invalid RFC3339 encoded datetime" in ran.stderr
    assert [json.loads(line)["charge_id"] for line in ran.stdout.splitlines()] == ["C1"]


def test_a_line_over_the_size_limit_is_rejected_with_the_reason(tmp_path: Path) -> None:
    codes = [f"M{n % 100:02d}.{n % 10}" for n in range(MAX_LINE_BYTES // 8)]
    huge = _line(event_id="E2", charge_id="C2", diagnosis_codes=codes)
    assert len(huge) > MAX_LINE_BYTES
    day = _file(tmp_path, _line(), huge, _line(event_id="E3", charge_id="C3"))
    ran = cli("check", str(day))
    assert ran.code == 0, ran.stderr
    assert f"rejected line 2: longer than {MAX_LINE_BYTES} bytes, the limit of one event" in (
        ran.stderr
    )
    assert [json.loads(line)["charge_id"] for line in ran.stdout.splitlines()] == ["C1", "C3"]


class _Reads(io.BytesIO):
    """A real in-memory stream that remembers the largest piece handed out per read."""

    largest = 0

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.largest = max(self.largest, len(line))
        return line


def test_an_oversized_line_is_never_held_whole() -> None:
    stream = _Reads(b'{"a":1}\n' + b"x" * (5 * MAX_LINE_BYTES) + b"\n" + b'{"b":2}\n')
    lines = list(numbered_lines(stream))
    assert lines == [(1, b'{"a":1}\n'), (2, None), (3, b'{"b":2}\n')]
    assert stream.largest <= MAX_LINE_BYTES + 1


# --- check and the rules directory ------------------------------------------------------------


def test_rules_dir_is_a_deprecated_alias_of_rules(tmp_path: Path) -> None:
    day = _file(tmp_path, _line())
    new = cli("check", str(day), "--rules", str(DEFAULT_PACKS_DIR))
    old = cli("check", str(day), "--rules-dir", str(DEFAULT_PACKS_DIR))
    assert new.code == old.code == 0 and new.stdout == old.stdout
    assert "--rules-dir is deprecated; use --rules" in old.stderr
    assert "deprecated" not in new.stderr


@pytest.mark.parametrize(
    "verb",
    [
        ["run"],
        ["run", "--bootstrap-servers", "127.0.0.1:1"],
        ["replay", "--bootstrap-servers", "127.0.0.1:1"],
        ["demo"],
    ],
    ids=["run-embedded", "run-cluster", "replay", "demo"],
)
@pytest.mark.parametrize("flag", ["--rules", "--rules-dir"])
def test_a_broken_pack_stops_every_verb_with_one_line_and_78(
    tmp_path: Path, verb: list[str], flag: str
) -> None:
    """The pack is loaded before any broker is started or asked, so run, replay and demo
    refuse it at once."""
    rules = tmp_path / "rules"
    rules.mkdir()
    pack = (DEFAULT_PACKS_DIR / "cpt97012.toml").read_text().replace("[cmt]", "[cmt", 1)
    (rules / "cpt97012.toml").write_text(pack)
    no_http = [] if verb[0] == "replay" else ["--http-port", "0"]
    ran = cli(*verb, flag, str(rules), *no_http)
    stderr = "\n".join(line for line in ran.stderr.splitlines() if "is deprecated" not in line)
    assert "Traceback" not in ran.stderr and ran.code == 78, ran.stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("charge-capture: ") and "cpt97012.toml:" in line
    assert "invalid TOML" in line


# --- bad values: argparse-style, exit 2 -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--http-port", "-1"], "argument --http-port: -1 is out of range"),
        (["run", "--http-port", "70000"], "argument --http-port: 70000 is out of range"),
        (["run", "--log-level", "chatty"], "argument --log-level: invalid choice 'chatty'"),
        (["generate", "--visits", "-5"], "argument --visits: -5 is out of range: must be >= 0"),
        (["run", "--commit-interval-ms", "0"], "argument --commit-interval-ms: 0 is out of range"),
        (["run", "--retention-days", "-5"], "argument --retention-days: -5 is out of range"),
        (["run", "--security-protocol", "TLS"], "invalid choice 'TLS' (choose from PLAINTEXT"),
        (["topics", "--partitions", "0"], "argument --partitions: 0 is out of range"),
        (["topics", "--replication-factor", "0"], "must be >= 1 or -1"),
        (["produce", "x", "--compression-type", "snappy"], "invalid choice 'snappy'"),
        (
            ["run", "--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-1"],
            "argument --sasl-mechanism: invalid choice 'SCRAM-SHA-1'",
        ),
        (["run", "--security-protocol", "SASL_SSL"], "SASL_SSL needs --sasl-mechanism"),
        (["run", "--heartbeat-interval-ms", "20000"], "must be below --session-timeout-ms"),
        (["run", "--ssl-cafile", "/no/ca.pem"], "argument --ssl-cafile: /no/ca.pem: no such"),
        (["topics", "--bootstrap-servers", "kafka:port"], "'kafka:port': a port must be"),
        (["topics"], "topics needs a cluster: --bootstrap-servers or CHARGE_CAPTURE_"),
        (["produce", "x", "--commit-interval-ms", "5"], "unrecognized arguments"),
    ],
)
def test_bad_values_are_usage_errors(args: list[str], expected: str) -> None:
    verb = args[0]
    one_line_error(cli(*args), 2, f"charge-capture {verb}: error: ", expected)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CHARGE_CAPTURE_HTTP_PORT", "abc", "'abc' is not an integer"),
        ("CHARGE_CAPTURE_PROCESSING_GUARANTEE", "foo", "invalid choice 'foo'"),
        ("CHARGE_CAPTURE_COMMIT_INTERVAL_MS", "0", "0 is out of range: must be >= 10"),
        ("CHARGE_CAPTURE_LOG_LEVEL", "chatty", "invalid choice 'chatty'"),
    ],
)
def test_bad_values_from_the_environment_name_the_variable(
    variable: str, value: str, expected: str
) -> None:
    ran = cli("run", env=clean_env(**{variable: value}))
    one_line_error(ran, 2, "charge-capture run: error: ", f"{variable}={value!r}: ", expected)


def test_a_variable_a_verb_does_not_take_is_ignored(tmp_path: Path) -> None:
    """CHARGE_CAPTURE_HTTP_PORT means nothing to check: one ConfigMap serves every verb."""
    day = _file(tmp_path, _line())
    ran = cli("check", str(day), env=clean_env(CHARGE_CAPTURE_HTTP_PORT="abc"))
    assert ran.code == 0, ran.stderr


def test_reversed_replay_range_is_an_error_not_an_empty_run() -> None:
    ran = cli(
        "replay",
        "--bootstrap-servers",
        f"127.0.0.1:{free_port()}",
        "--from",
        "offset:0:100",
        "--to",
        "offset:0:50",
    )
    one_line_error(
        ran, 2, "charge-capture replay: error: ", "--to offset:0:50 is before --from offset:0:100"
    )
    ran = cli(
        "replay",
        "--bootstrap-servers",
        f"127.0.0.1:{free_port()}",
        "--from",
        "timestamp:2026-03-02T10:00:00Z",
        "--to",
        "timestamp:2026-03-01T10:00:00Z",
    )
    one_line_error(ran, 2, "the range ends before it starts")


# --- help and version ---------------------------------------------------------------------------

WORKER_ONLY = ("--commit-interval-ms", "--instance-id", "--http-port", "--retention-days")


def _flag_help(help_text: str) -> dict[str, str]:
    """Each --flag of a --help with its description (continuation lines joined)."""
    flags: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("--") and line.startswith("  "):
            current = stripped.split()[0].rstrip(",")  # a switch: "--x, --no-x"
            flags[current] = stripped
        elif current is not None and line.startswith("        ") and stripped:
            flags[current] += " " + stripped
        else:
            current = None
    return flags


@pytest.mark.parametrize("verb", ["produce", "topics", "decisions", "check"])
def test_help_lists_only_the_verbs_own_flags(verb: str) -> None:
    ran = cli(verb, "--help")
    assert ran.code == 0
    flags = _flag_help(ran.stdout)
    assert flags, ran.stdout
    for flag in WORKER_ONLY:
        assert flag not in flags, f"{verb} --help lists {flag}"


@pytest.mark.parametrize("verb", ["run", "demo", "topics", "produce", "replay", "decisions"])
def test_every_option_says_its_default_and_variable(verb: str) -> None:
    flags = _flag_help(cli(verb, "--help").stdout)
    settings = {f: h for f, h in flags.items() if "CHARGE_CAPTURE_" in h}
    assert len(settings) >= 5
    for flag, text in settings.items():
        variable = "CHARGE_CAPTURE_" + flag.removeprefix("--").replace("-", "_").upper()
        if flag == "--rules":
            variable = "CHARGE_CAPTURE_RULES_DIR"
        assert f"env {variable})" in text, text
        assert "(default: " in text, text
        assert len(text.split("(default:")[0].split()) >= 2, f"{flag} has no description"


def test_one_documented_name_for_the_rules_directory() -> None:
    for verb in ("check", "run", "replay", "demo"):
        flags = _flag_help(cli(verb, "--help").stdout)
        assert "--rules" in flags and "--rules-dir" not in flags, verb


def test_version() -> None:
    ran = cli("--version")
    assert ran.code == 0
    assert ran.stdout.strip() == f"charge-capture {metadata.version('charge-capture')}"


# --- the documented exit codes ------------------------------------------------------------------

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def _documented_codes() -> set[int]:
    text = OPERATIONS.read_text()
    section = text.split("## Exit codes (CLI)\n", 1)[1].split("\n## ", 1)[0]
    return {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)}


def test_every_exit_code_a_verb_names_is_documented() -> None:
    documented = _documented_codes()
    assert {0, 1, 2, 65, 66, 69, 73, 78, 130} <= documented
    for verb in ("check", "topics", "produce", "replay", "decisions", "run", "demo"):
        epilog = cli(verb, "--help").stdout.split("Exit codes:", 1)[1]
        named = {int(n) for n in re.findall(r"\b(\d{1,3})\b(?= [a-z(])", epilog)}
        assert named and named <= documented | {70}, (verb, named - documented)


def test_an_option_is_one_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    """What adding an option takes: one Option in a group gives the flag, its variable, its
    checked value and its WorkerConfig field."""
    import argparse

    from worker.cli import values
    from worker.cli.optionkit import Group, Option, UsageError, add_groups, apply_environment, fill
    from worker.config import WorkerConfig

    group = Group("x", (Option("max_poll_records", "records", values.integer(1), flag="--batch"),))
    parser = argparse.ArgumentParser()
    add_groups(parser, [group])
    assert "env CHARGE_CAPTURE_BATCH)" in parser.format_help()
    assert "(default: 1000;" in parser.format_help()
    config = WorkerConfig()
    fill(config, parser.parse_args(["--batch", "7"]), group.options)
    assert config.max_poll_records == 7
    monkeypatch.setenv("CHARGE_CAPTURE_BATCH", "0")
    with pytest.raises(UsageError, match=r"CHARGE_CAPTURE_BATCH='0': 0 is out of range"):
        apply_environment(parser.parse_args([]), group.options)
