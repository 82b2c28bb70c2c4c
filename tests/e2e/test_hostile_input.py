"""Hostile input through the command line: every line accounted for, nothing invalid ever sent.

`tests/test_source.py` covers parsing line by line; these tests run `bulkretry run` end to end
against a live loopback server that records every request, so that "never sent" and "never
leaves its path segment" are checked where it matters: on the wire.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile import (
    ACTION_PATH,
    ENV,
    MIB,
    RUN,
    Server,
    in_thread,
    success_handler,
    uuid,
    web_server,
)

from bulkretry._cli.main import main

pytestmark = pytest.mark.e2e

BOM = b"\xef\xbb\xbf"
CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    """One well-behaved Flow Service for the module, in its own thread."""
    with in_thread(lambda: web_server(success_handler())) as server:
        yield server


@pytest.fixture
def server(live: Server) -> Server:
    """The live server, with what it saw so far forgotten."""
    live.seen.clear()
    return live


def run_cli(server: Server, tmp_path: Path, data: bytes, *args: str) -> tuple[int, list[Any]]:
    """Run `bulkretry run FILE` on ``data``; return the exit code and the records."""
    source = tmp_path / "ids.txt"
    source.write_bytes(data)
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "run",
            str(source),
            "-o",
            str(out),
            "--overwrite",
            "--base-url",
            server.base_url,
            "--rate",
            "2000",
            "--burst",
            "20",
            "-q",
            *args,
        ],
        env=ENV,
    )
    # Records are written as each finishes: put them back in input order.
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return code, sorted(records, key=lambda r: int(r["line"]))


def exit_code_of(argv: list[str], env: dict[str, str]) -> int:
    """`main`'s exit code, whether it returns it or argparse raises SystemExit."""
    try:
        return main(argv, env=env)
    except SystemExit as exc:
        return int(exc.code or 0)


def record_count(data: bytes) -> int:
    """Count the lines that are neither blank nor comments, as README defines them."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    count = 0
    for number, line in enumerate(lines, start=1):
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM) :]
        stripped = line.strip()
        if stripped and not stripped.startswith(b"#"):
            count += 1
    return count


# --- one hostile line among good ones ------------------------------------------------------


def _u(text: str) -> bytes:
    return text.encode("utf-8")


HOSTILE: dict[str, bytes] = {
    "not-a-uuid": b"not-a-uuid",
    "one-char-short": _u(RUN[:-1]),
    "one-char-long": _u(RUN + "0"),
    "no-dashes": _u(RUN.replace("-", "")),
    "in-braces": _u("{" + RUN + "}"),
    "urn-form": _u("urn:uuid:" + RUN),
    "g-in-hex": _u(RUN[:-1] + "g"),
    "trailing-slash": _u(RUN + "/"),
    "traversal": b"../../flows",
    "traversal-after-id": _u(RUN + "/../../flows"),
    "dot-dot": b"..",
    "dot": b".",
    "slash": b"/",
    "query": _u(RUN + "?op=delete"),
    "fragment": _u(RUN + "#x"),
    "pct-2e-2e": b"%2e%2e",
    "pct-2e-2e-slash-id": _u("%2e%2e%2f" + RUN),
    "pct-dash-inside": _u(RUN[:8] + "%2d" + RUN[9:]),
    "pct-slash-after": _u(RUN + "%2F.."),
    "space-inside": _u(RUN[:8] + " " + RUN[9:]),
    "tab-then-word": _u(RUN + "\tretry"),
    "two-ids": _u(RUN + " " + uuid(1)),
    "csv": _u(RUN + "," + uuid(1)),
    "nul-after": _u(RUN + "\x00"),
    "nul-before": _u("\x00" + RUN),
    "nul-inside": _u(RUN[:8] + "\x00" + RUN[9:]),
    "only-nul": b"\x00",
    "csi-escape": _u(RUN + "\x1b[31m"),
    "osc-title-escape": b"\x1b]0;owned\x07",
    "del": _u(RUN + "\x7f"),
    "bell-before": _u("\x07" + RUN),
    "vertical-tab-inside": _u(RUN[:8] + "\x0b" + RUN[9:]),
    "form-feed-inside": _u(RUN[:8] + "\x0c" + RUN[9:]),
    "fullwidth-digit": _u("\uff14" + RUN[1:]),
    "arabic-indic-digit": _u("\u0664" + RUN[1:]),
    "superscript-digit": _u("\u00b9" + RUN[1:]),
    "cyrillic-e": _u(RUN.replace("e", "\u0435")),
    "greek-alpha": _u(RUN.replace("a", "\u03b1")),
    "en-dash": _u(RUN.replace("-", "\u2013")),
    "non-breaking-hyphen": _u(RUN.replace("-", "\u2011")),
    "minus-sign": _u(RUN.replace("-", "\u2212")),
    "zero-width-space-after": _u(RUN + "\u200b"),
    "zero-width-joiner-inside": _u(RUN[:4] + "\u200d" + RUN[4:]),
    "rtl-override": _u("\u202e" + RUN),
    "nbsp-around": _u("\u00a0" + RUN + "\u00a0"),
    "ideographic-space-before": _u("\u3000" + RUN),
    "bom-on-line-2": BOM + _u(RUN),
    "invalid-utf8": b"\xff\xfe" + _u(RUN),
    "overlong-utf8-slash": b"\xc0\xaf",
    "surrogate-in-utf8": b"\xed\xa0\x80" + _u(RUN),
    "latin1-byte-after": _u(RUN) + b"\xe9",
    "json-id-a-number": b'{"id": 5}',
    "json-id-true": b'{"id": true}',
    "json-run-id-traversal": b'{"run_id": "../../flows"}',
    "json-run-id-dot-dot": b'{"run_id": ".."}',
    "json-run-id-pct": b'{"run_id": "%2e%2e"}',
    "json-run-id-slash-after": _u('{"run_id": "' + RUN + '/../x"}'),
    "json-run-id-nul": _u('{"run_id": "' + RUN + '\\u0000"}'),
    "json-run-id-escape": _u('{"run_id": "' + RUN + '\\u001b[2J"}'),
    "json-run-id-a-list": _u('{"run_id": ["' + RUN + '"]}'),
    # Trimmed as a bare line is, no more: Unicode whitespace and separators around are invalid.
    "json-run-id-nbsp-around": _u('{"run_id": "\\u00a0' + RUN + '\\u00a0"}'),
    "json-run-id-ideographic-space": _u('{"run_id": "\\u3000' + RUN + '"}'),
    "json-run-id-unit-separator": _u('{"run_id": "\\u001f' + RUN + '"}'),
    "json-run-id-file-separator": _u('{"run_id": "' + RUN + '\\u001c"}'),
    "json-run-id-next-line": _u('{"run_id": "' + RUN + '\\u0085"}'),
    "json-run-id-line-separator": _u('{"run_id": "\\u2028' + RUN + '"}'),
    "json-run-id-an-object": _u('{"run_id": {"id": "' + RUN + '"}}'),
    "json-run-id-number-id-valid": _u('{"run_id": 5, "id": "' + uuid(5) + '"}'),
    "json-empty-object": b"{}",
    "json-truncated": _u('{"run_id": "' + RUN + '"'),
    "json-list": _u('["' + RUN + '"]'),
    "json-string": _u('"' + RUN + '"'),
    "json-with-nul-byte": b'{"run_id": "\x00"}',
    "line-of-1MB": _u(RUN) + b"a" * MIB,
    "line-of-1MB-spaces-then-id": b" " * MIB + _u(RUN),
    "line-of-1MB-json": _u('{"run_id": "' + RUN + '", "pad": "') + b"p" * MIB + b'"}',
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_line_is_one_invalid_record_and_is_never_sent(
    name: str, server: Server, tmp_path: Path
) -> None:
    """The hostile line yields exactly one `invalid` record; only the good line is sent."""
    data = _u(RUN) + b"\n" + HOSTILE[name] + b"\n" + _u(uuid(2)) + b"\n"
    code, records = run_cli(server, tmp_path, data)
    assert code == 1
    assert [(r["line"], r["outcome"]) for r in records] == [
        (1, "retriggered"),
        (2, "invalid"),
        (3, "retriggered"),
    ]
    invalid = records[1]
    assert invalid["error"]["kind"] == "invalid_input"
    assert invalid["attempts"] == 0
    assert isinstance(invalid["run_id"], str)
    assert len(invalid["run_id"]) <= 121
    assert sorted(server.paths) == sorted([f"/runs/{RUN}/action", f"/runs/{uuid(2)}/action"])
    assert all(ACTION_PATH.match(p) for p in server.paths)
    assert all(s.query == "op=re-trigger" for s in server.seen)


def test_tolerated_forms_are_normalised_before_sending(server: Server, tmp_path: Path) -> None:
    """Upper case, surrounding ASCII whitespace and JSON lines all send the canonical ID."""
    data = b"".join(
        [
            _u(uuid(1).upper()) + b"\n",
            b" \t" + _u(uuid(2)) + b" \t\r\n",
            _u('{"run_id": " ' + uuid(3).upper() + ' "}') + b"\n",
            _u('{"id": "' + uuid(4) + '", "outcome": "failed"}') + b"\n",
            _u(uuid(1)) + b"\n",  # the same run as line 1
        ]
    )
    code, records = run_cli(server, tmp_path, data)
    assert code == 0
    assert [r["outcome"] for r in records] == ["retriggered"] * 4 + ["duplicate"]
    assert sorted(server.paths) == sorted(f"/runs/{uuid(i)}/action" for i in range(1, 5))


# --- the shape of the file -----------------------------------------------------------------

SHAPES: dict[str, tuple[bytes, list[str]]] = {
    # name: (file content, outcomes in line order)
    "crlf": (_u(f"{RUN}\r\n{uuid(1)}\r\n"), ["retriggered", "retriggered"]),
    "bom": (BOM + _u(f"{RUN}\n"), ["retriggered"]),
    "bom-crlf-no-final-newline": (
        BOM + _u(f"{RUN}\r\n# note\r\n\r\n{uuid(1)}"),
        ["retriggered", "retriggered"],
    ),
    "no-final-newline": (_u(f"{RUN}\n{uuid(1)}"), ["retriggered", "retriggered"]),
    "empty": (b"", []),
    "only-a-bom": (BOM, []),
    "only-newlines": (b"\n\n\r\n", []),
    "only-comments-and-blanks": (b"# a\n\n   \n\t# b\r\n#\n", []),
    "comment-of-1MB": (b"#" + b"x" * MIB + b"\n" + _u(RUN) + b"\n", ["retriggered"]),
    "blank-line-of-1MB": (b" " * MIB + b"\n" + _u(RUN) + b"\n", ["retriggered"]),
    # Old Mac line ends: bulkretry splits on \n only, so this is one (invalid) line.
    "cr-only-line-ends": (_u(f"{RUN}\r{uuid(1)}\r"), ["invalid"]),
    # UTF-16 is not UTF-8: each \n-separated chunk is one invalid record, none sent.
    "utf-16": (f"{RUN}\n".encode("utf-16"), ["invalid", "invalid"]),
    "utf-32": (f"{RUN}\n".encode("utf-32"), ["invalid", "invalid"]),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_file_shapes_yield_one_record_per_non_blank_non_comment_line(
    name: str, server: Server, tmp_path: Path
) -> None:
    """CRLF, BOM, no final newline, empty input, long comments: README's counting holds."""
    data, outcomes = SHAPES[name]
    code, records = run_cli(server, tmp_path, data)
    assert [r["outcome"] for r in records] == outcomes
    assert len(records) == record_count(data)
    assert code == (1 if "invalid" in outcomes else 0)
    assert len(server.seen) == outcomes.count("retriggered")
    assert all(ACTION_PATH.match(p) for p in server.paths)


def test_many_invalid_lines_are_each_accounted_for(server: Server, tmp_path: Path) -> None:
    """3,000 hostile lines and one good one: 3,001 records, one request."""
    junk = ["../{}/..", RUN + "\x00{}", "%2e%2e/{}"]
    lines = [junk[i % 3].format(i) for i in range(3000)] + [RUN]
    code, records = run_cli(server, tmp_path, "\n".join(lines).encode())
    assert code == 1
    assert len(records) == 3001
    assert [r["line"] for r in records] == list(range(1, 3002))
    assert server.paths == [f"/runs/{RUN}/action"]


def test_stdin_with_hostile_bytes_is_read_like_a_file(server: Server) -> None:
    """`… | bulkretry run`: hostile bytes on stdin, the same accounting, nothing invalid sent."""
    data = b"".join([BOM, _u(RUN), b"\r\n", b"\xff\x00../x\n", b"# c\n", _u(uuid(9)), b"\n"])
    proc = subprocess.run(
        [sys.executable, "-m", "bulkretry", "run", "-", "--base-url", server.base_url, "-q"],
        input=data,
        capture_output=True,
        env={**os.environ, **ENV},
        timeout=60,
        check=False,
    )
    records = sorted(
        (orjson.loads(line) for line in proc.stdout.splitlines()), key=lambda r: r["line"]
    )
    assert proc.returncode == 1
    assert [(r["source"], r["line"], r["outcome"]) for r in records] == [
        ("-", 1, "retriggered"),
        ("-", 2, "invalid"),
        ("-", 4, "retriggered"),
    ]
    assert sorted(server.paths) == sorted([f"/runs/{RUN}/action", f"/runs/{uuid(9)}/action"])
    assert proc.stderr == b""


# --- a run ID never leaves its path segment ------------------------------------------------

ODD_IDS = [
    "...",
    "../../flows",
    "a/b",
    "x/../../y",
    "?op=delete",
    "x#frag",
    "%2e%2e",
    "%2F",
    "%",
    "a b",
    "\\..\\",
    ";x=1",
    "~",
    "runs",
    "action?op=x&y=z",
    "@evil.example",
    "http://evil.example/",
]


def test_any_id_a_custom_pattern_admits_stays_in_its_path_segment(
    server: Server, tmp_path: Path
) -> None:
    """With --run-id-pattern '.+', `..`, `/`, `?`, `#`, `%` stay inside /runs/{id}/action."""
    code, records = run_cli(server, tmp_path, "\n".join(ODD_IDS).encode(), "--run-id-pattern", ".+")
    assert code == 0
    assert [r["outcome"] for r in records] == ["retriggered"] * len(ODD_IDS)
    sent = []
    for seen in server.seen:
        assert seen.query == "op=re-trigger"
        parts = seen.path.split("/")
        assert len(parts) == 4, seen.path
        assert parts[:2] == ["", "runs"]
        assert parts[3] == "action"
        assert parts[2] not in (".", ".."), seen.path
        sent.append(unquote(parts[2]))
    assert sorted(sent) == sorted(ODD_IDS)


def test_dot_segments_are_never_run_ids_whatever_the_pattern(
    server: Server, tmp_path: Path
) -> None:
    """`.` and `..` would change the path they are put in: invalid even under '.+'."""
    code, records = run_cli(server, tmp_path, b".\n..\n", "--run-id-pattern", ".+")
    assert code == 1
    assert [r["outcome"] for r in records] == ["invalid", "invalid"]
    assert server.seen == []


# --- paths that cannot be read -------------------------------------------------------------


def _missing(tmp: Path) -> list[str]:
    return [str(tmp / "nope.txt")]


def _directory(tmp: Path) -> list[str]:
    return [str(tmp)]


def _through_a_file(tmp: Path) -> list[str]:
    (tmp / "file").write_text(RUN + "\n")
    return [str(tmp / "file" / "ids.txt")]


def _dangling_symlink(tmp: Path) -> list[str]:
    (tmp / "link").symlink_to(tmp / "gone")
    return [str(tmp / "link")]


def _symlink_loop(tmp: Path) -> list[str]:
    (tmp / "a").symlink_to(tmp / "b")
    (tmp / "b").symlink_to(tmp / "a")
    return [str(tmp / "a")]


def _second_of_two_missing(tmp: Path) -> list[str]:
    (tmp / "good.txt").write_text(RUN + "\n")
    return [str(tmp / "good.txt"), str(tmp / "nope.txt")]


def _name_too_long(tmp: Path) -> list[str]:
    return [str(tmp / ("x" * 5000))]


BAD_PATHS = {
    "missing": (_missing, "not found"),
    "directory": (_directory, "directory"),
    "through-a-file": (_through_a_file, "Not a directory"),
    "dangling-symlink": (_dangling_symlink, "not found"),
    "symlink-loop": (_symlink_loop, "symbolic links"),
    "second-of-two-missing": (_second_of_two_missing, "not found"),
    "name-too-long": (_name_too_long, "too long"),
}


@pytest.mark.parametrize("name", list(BAD_PATHS))
def test_an_input_path_that_cannot_be_read_exits_2_before_any_request(
    name: str, server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Missing, a directory, not a directory, a bad link: exit 2, one line, nothing sent."""
    make, phrase = BAD_PATHS[name]
    out = tmp_path / "out.jsonl"
    inputs = make(tmp_path)
    code = main(["run", *inputs, "-o", str(out), "--base-url", server.base_url], env=ENV)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("bulkretry: error: ")
    assert phrase in err
    assert "Traceback" not in err
    assert server.seen == []
    assert not out.exists() or out.stat().st_size == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_input_exits_2_before_any_request(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file without read permission: exit 2, one line, nothing sent."""
    ids = tmp_path / "ids.txt"
    ids.write_text(RUN + "\n")
    ids.chmod(0)
    code = main(["run", str(ids), "--base-url", server.base_url], env=ENV)
    err = capsys.readouterr().err
    assert code == 2
    assert "permission denied" in err
    assert server.seen == []


def test_an_input_access_refuses_exits_2_before_any_request(
    server: Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read access refused (as for a non-root user on a 000 file): exit 2, nothing sent."""
    ids = tmp_path / "ids.txt"
    ids.write_text(RUN + "\n")
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if str(p) == str(ids) else real_access(p, mode)
    )
    code = main(["run", str(ids), "--base-url", server.base_url], env=ENV)
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"bulkretry: error: cannot read input {ids}: permission denied\n"
    assert server.seen == []


@pytest.mark.parametrize("target", ["directory", "same-as-input"])
def test_an_output_that_cannot_be_used_exits_2_before_any_request(
    target: str, server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o a directory, or -o the input itself: exit 2, one line, nothing sent."""
    ids = tmp_path / "ids.txt"
    ids.write_text(RUN + "\n")
    out = tmp_path if target == "directory" else ids
    code = main(["run", str(ids), "-o", str(out), "--base-url", server.base_url], env=ENV)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert server.seen == []
    assert ids.read_text() == RUN + "\n"


# --- usage errors --------------------------------------------------------------------------

USAGE = {
    "timeout-zero": ["--timeout", "0"],
    "timeout-nan": ["--timeout", "nan"],
    "timeout-inf": ["--timeout", "inf"],
    "timeout-overflow": ["--timeout", "1e400"],
    "timeout-negative": ["--timeout", "-1"],
    "timeout-word": ["--timeout", "soon"],
    "rate-zero": ["--rate", "0"],
    "rate-word": ["--rate", "fast"],
    "concurrency-zero": ["--concurrency", "0"],
    "concurrency-fraction": ["--concurrency", "1.5"],
    "burst-negative": ["--burst", "-1"],
    "max-attempts-zero": ["--max-attempts", "0"],
    "deadline-nan": ["--deadline", "nan"],
    "retry-budget-negative": ["--retry-budget", "-1"],
    "max-retriggers-zero": ["--max-retriggers", "0"],
    "on-ambiguous-word": ["--on-ambiguous", "maybe"],
    "log-format-xml": ["--log-format", "xml"],
    "sync-word": ["--sync", "sometimes"],
    "halt-on-word": ["--halt-on", "bogus"],
    "only-unknown": ["--only", "nonsense"],
    "pattern-unbalanced": ["--run-id-pattern", "("],
    "pattern-bad-range": ["--run-id-pattern", "[z-a]"],
    "op-with-space": ["--op", "re trigger"],
    "op-with-ampersand": ["--op", "a&b=c"],
    "op-with-slash": ["--op", "../x"],
    "op-empty": ["--op", ""],
    "base-url-ftp": ["--base-url", "ftp://example.com"],
    "base-url-http-remote": ["--base-url", "http://example.com"],
    "base-url-credentials": ["--base-url", "https://user:pw@example.com"],
    "base-url-query": ["--base-url", "https://example.com/x?y=1"],
    "base-url-fragment": ["--base-url", "https://example.com/x#y"],
    "base-url-space": ["--base-url", "https://exa mple.com"],
    "base-url-bad-port": ["--base-url", "https://example.com:99999"],
    "base-url-no-host": ["--base-url", "https://"],
    "base-url-not-a-url": ["--base-url", "not a url"],
    "unknown-flag": ["--frobnicate"],
}


@pytest.mark.parametrize("name", list(USAGE))
def test_a_bad_option_value_exits_2_with_one_line_and_sends_nothing(
    name: str, server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad values: exit 2, exactly one line on stderr, no traceback, no request."""
    ids = tmp_path / "ids.txt"
    ids.write_text(RUN + "\n")
    argv = ["run", str(ids), "-o", str(tmp_path / "o"), "--base-url", server.base_url]
    code = exit_code_of([*argv, *USAGE[name]], ENV)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "error" in err
    assert "Traceback" not in err
    assert server.seen == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BULKRETRY_TIMEOUT", "abc"),
        ("BULKRETRY_DRY_RUN", "maybe"),
        ("BULKRETRY_CONCURRENCY", "-5"),
        ("BULKRETRY_BASE_URL", "ftp://example.com"),
        ("BULKRETRY_RUN_ID_PATTERN", "(("),
    ],
)
def test_a_bad_environment_value_exits_2_with_one_line(
    variable: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same for BULKRETRY_* variables."""
    ids = tmp_path / "ids.txt"
    ids.write_text(RUN + "\n")
    code = exit_code_of(["run", str(ids), "-o", str(tmp_path / "o")], {**ENV, variable: value})
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["--timeout", "nan"], ["--base-url", "http://example.com"], ["."], ["--frobnicate"]],
    ids=["timeout-nan", "base-url-http-remote", "directory-input", "unknown-flag"],
)
def test_usage_errors_from_the_real_command_are_one_line(args: list[str]) -> None:
    """`python -m bulkretry run …` with a usage error: exit 2, one stderr line, no output."""
    proc = subprocess.run(
        [sys.executable, "-m", "bulkretry", "run", *args],
        input=b"",
        capture_output=True,
        env={**os.environ, **ENV},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count(b"\n") == 1, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert proc.stdout == b""


# --- fuzz ----------------------------------------------------------------------------------

PIECES = [
    RUN,
    RUN.upper(),
    uuid(1),
    " ",
    "\t",
    "\r",
    "#",
    "{",
    "}",
    '"run_id": ',
    '"id": ',
    '"',
    ":",
    "/",
    "..",
    "%2e",
    "?",
    "\x00",
    "\x1b[",
    "\u00a0",
    "\u200b",
    "\ufeff",
    "\u0435",
    "\uff14",
]
TEXT_LINE = st.lists(
    st.sampled_from(PIECES) | st.text(st.characters(exclude_categories=["Cs"]), max_size=4),
    max_size=6,
).map(lambda parts: "".join(parts).encode("utf-8"))
LINE = TEXT_LINE | st.binary(max_size=40)


@st.composite
def input_files(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(LINE, max_size=12))
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = end.join(lines) + (end if lines and draw(st.booleans()) else b"")
    return (BOM + data) if draw(st.booleans()) else data


@pytest.fixture(scope="module")
def fuzz_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bulkretry-fuzz-"))
    yield path
    shutil.rmtree(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=input_files())
def test_fuzzed_input_in_dry_run_accounts_for_every_line(data: bytes, fuzz_dir: Path) -> None:
    """Random lines: one record per non-blank non-comment line; sendable IDs are canonical."""
    source = fuzz_dir / "ids.txt"
    source.write_bytes(data)
    out = fuzz_dir / "out.jsonl"
    code = main(["run", "--dry-run", "-q", str(source), "-o", str(out), "--overwrite"], env={})
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(records) == record_count(data)
    lines = [r["line"] for r in records]
    assert lines == sorted(set(lines))
    outcomes = {r["outcome"] for r in records}
    assert outcomes <= {"would_retrigger", "duplicate", "invalid"}
    for record in records:
        if record["outcome"] != "invalid":
            assert CANONICAL_UUID.match(record["run_id"]), record
    assert code == (1 if "invalid" in outcomes else 0)


def test_a_null_run_id_falls_back_to_id(tmp_path: Path) -> None:
    """``{"run_id": null, "id": UUID}`` takes the run ID from ``id``, as a listing line would."""
    ids = tmp_path / "ids.jsonl"
    ids.write_text('{"run_id": null, "id": "' + uuid(5) + '"}\n')
    out = tmp_path / "out.jsonl"
    assert main(["run", "--dry-run", str(ids), "-o", str(out)], env={}) == 0
    [record] = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert (record["run_id"], record["outcome"]) == (uuid(5), "would_retrigger")
