"""`meshnode genkey`, `genpsk` and `pubkey` against wireguard-tools' `wg`.

meshnode runs as a subprocess (`python -m meshnode`). Where wg is installed,
every case is also run through it and must give the same stdout, stderr (with
the program name swapped) and exit status.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from meshnode import cli

WG = shutil.which("wg")
needs_wg = pytest.mark.skipif(
    WG is None, reason="wireguard-tools' `wg` is not on PATH (CI installs it), so no comparison"
)

# A private key from `wg genkey` and its public key from `wg pubkey`.
KEY = "qFttxbUkz3SP8a8N0d8B+1SCT/0zc2/Tpx0FDipi2ms="
PUB = "oSfuMGhNrsMgrx2AHJNTtdBhTg7fDar09iQKzGznPxQ="

FORMAT = b"meshnode: Key is not the correct length or format\n"
TRAILING = b"meshnode: Trailing characters found after key\n"
WORLD = (
    b"Warning: writing to world accessible file.\n"
    b"Consider setting the umask to 077 and trying again.\n"
)


class Result(NamedTuple):
    stdout: bytes
    stderr: bytes
    returncode: int


def _run(argv: list[str], stdin: bytes, executable: str | None = None) -> Result:
    p = subprocess.run(argv, input=stdin, capture_output=True, executable=executable, timeout=20)
    return Result(p.stdout, p.stderr, p.returncode)


@functools.cache
def meshnode(*args: str, stdin: bytes = b"") -> Result:
    return _run([sys.executable, "-m", "meshnode", *args], stdin)


def wg(*args: str, stdin: bytes = b"") -> Result:
    """wg with argv[0] "wg", since wg names itself by argv[0] in its messages."""
    assert WG is not None
    r = _run(["wg", *args], stdin, executable=WG)
    swapped = re.sub(rb"(?m)^(Usage: )?wg(?=[: ])", rb"\1meshnode", r.stderr)
    return r._replace(stderr=swapped)


def decode_key(line: bytes) -> bytes:
    assert line.endswith(b"\n") and len(line) == 45, line
    key = base64.b64decode(line[:-1], validate=True)
    assert base64.b64encode(key) == line[:-1]
    return key


def is_clamped(key: bytes) -> bool:
    return key[0] & 7 == 0 and key[31] & 0xC0 == 0x40


# (id, stdin, expected stderr; b"" means success)
PUBKEY_CASES: list[tuple[str, bytes, bytes]] = [
    ("bare", KEY.encode(), b""),
    ("newline", KEY.encode() + b"\n", b""),
    ("crlf", KEY.encode() + b"\r\n", b""),
    ("newline-then-spaces", KEY.encode() + b"\n  \t\v\f\r\n", b""),
    ("trailing-nuls", KEY.encode() + b"\0\0\n\0", b""),
    ("43rd-char-E", (KEY[:42] + "E=").encode(), b""),
    ("unclamped-all-ff", b"/" * 42 + b"8=", b""),
    ("all-zero", b"A" * 43 + b"=", b""),
    ("empty", b"", FORMAT),
    ("only-newline", b"\n", FORMAT),
    ("short-garbage", b"abc", FORMAT),
    ("43-chars", KEY[:43].encode(), FORMAT),
    ("43-chars-newline", KEY[:43].encode() + b"\n", FORMAT),
    ("43rd-char-B", (KEY[:42] + "B=").encode(), FORMAT),
    ("no-padding", (KEY[:43] + "A").encode(), FORMAT),
    ("bad-char", b"!" + KEY[1:].encode(), FORMAT),
    ("space-inside", KEY[:10].encode() + b" " + KEY[11:].encode(), FORMAT),
    ("urlsafe-alphabet", KEY.translate(str.maketrans("+/", "-_")).encode(), FORMAT),
    ("nul-inside", b"A\0" + KEY[2:].encode(), FORMAT),
    ("non-ascii", "é".encode() + KEY[2:].encode(), FORMAT),
    ("leading-space", b" " + KEY.encode() + b"\n", TRAILING),
    ("45-chars", KEY.encode() + b"A", TRAILING),
    ("extra-padding", KEY.encode() + b"=", TRAILING),
    ("garbage-after-newline", KEY.encode() + b"\nx", TRAILING),
    ("garbage-after-space", KEY.encode() + b" x\n", TRAILING),
    ("non-ascii-after", KEY.encode() + "é".encode(), TRAILING),
    # the trailing check comes before the format check
    ("bad-key-and-trailing", (KEY[:42] + "B=x").encode(), TRAILING),
]
PUBKEY_IDS = [case[0] for case in PUBKEY_CASES]
PUBKEY_INPUTS = [pytest.param(stdin, id=name) for name, stdin, _ in PUBKEY_CASES]

USAGE_CASES = [("genkey", "x"), ("genkey", "--help"), ("genpsk", "x", "y"), ("pubkey", "x")]


def test_known_public_key() -> None:
    assert meshnode("pubkey", stdin=KEY.encode() + b"\n") == (PUB.encode() + b"\n", b"", 0)


@pytest.mark.parametrize(("stdin", "stderr"), [c[1:] for c in PUBKEY_CASES], ids=PUBKEY_IDS)
def test_pubkey_cases(stdin: bytes, stderr: bytes) -> None:
    r = meshnode("pubkey", stdin=stdin)
    assert r.stderr == stderr
    if stderr:
        assert (r.stdout, r.returncode) == (b"", 1)
    else:
        assert r.returncode == 0
        decode_key(r.stdout)


@needs_wg
@pytest.mark.parametrize("stdin", PUBKEY_INPUTS)
def test_pubkey_matches_wg(stdin: bytes) -> None:
    assert meshnode("pubkey", stdin=stdin) == wg("pubkey", stdin=stdin)


@pytest.mark.parametrize("args", USAGE_CASES, ids=" ".join)
def test_usage_errors(args: tuple[str, ...]) -> None:
    assert meshnode(*args) == (b"", f"Usage: meshnode {args[0]}\n".encode(), 1)


@needs_wg
@pytest.mark.parametrize("args", USAGE_CASES, ids=" ".join)
def test_usage_errors_match_wg(args: tuple[str, ...]) -> None:
    assert meshnode(*args) == wg(*args)


def test_genkey_is_clamped_and_random() -> None:
    keys = []
    for _ in range(2):
        r = _run([sys.executable, "-m", "meshnode", "genkey"], b"")
        assert (r.stderr, r.returncode) == (b"", 0)
        keys.append(decode_key(r.stdout))
    assert all(is_clamped(k) for k in keys)
    assert keys[0] != keys[1]


def test_genpsk_is_32_random_bytes() -> None:
    psks = []
    for _ in range(2):
        r = _run([sys.executable, "-m", "meshnode", "genpsk"], b"")
        assert (r.stderr, r.returncode) == (b"", 0)
        psks.append(decode_key(r.stdout))
    assert psks[0] != psks[1]


def test_genkey_clamps_and_genpsk_does_not(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: b"\xff" * n)
    assert cli.main(["genpsk"]) == 0
    assert capsys.readouterr().out == "/" * 42 + "8=\n"
    assert cli.main(["genkey"]) == 0
    assert decode_key(capsys.readouterr().out.encode()) == b"\xf8" + b"\xff" * 30 + b"\x7f"


@needs_wg
def test_genkey_pipe_pubkey_matches_wg() -> None:
    key = meshnode("genkey").stdout
    assert meshnode("pubkey", stdin=key) == wg("pubkey", stdin=key)
    assert meshnode("pubkey", stdin=key).returncode == 0


def _to_file(argv: list[str], path: Path, mode: int, executable: str | None = None) -> Result:
    path.unlink(missing_ok=True)
    path.touch()
    path.chmod(mode)
    with path.open("wb") as out:
        p = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, executable=executable)
    return Result(path.read_bytes(), p.stderr, p.returncode)


@pytest.mark.parametrize("command", ["genkey", "genpsk"])
@pytest.mark.parametrize(("mode", "warns"), [(0o644, True), (0o601, True), (0o640, False)])
def test_world_accessible_warning(tmp_path: Path, command: str, mode: int, warns: bool) -> None:
    r = _to_file([sys.executable, "-m", "meshnode", command], tmp_path / "key", mode)
    assert r.stderr == (WORLD if warns else b"")
    assert r.returncode == 0
    decode_key(r.stdout)


@needs_wg
@pytest.mark.parametrize("command", ["genkey", "genpsk"])
def test_world_accessible_warning_matches_wg(tmp_path: Path, command: str) -> None:
    ours = _to_file([sys.executable, "-m", "meshnode", command], tmp_path / "ours", 0o644)
    theirs = _to_file(["wg", command], tmp_path / "theirs", 0o644, executable=WG)
    assert (ours.stderr, ours.returncode) == (theirs.stderr, theirs.returncode) == (WORLD, 0)
    assert len(ours.stdout) == len(theirs.stdout) == 45


def test_pubkey_does_not_warn(tmp_path: Path) -> None:
    path = tmp_path / "pub"
    path.write_bytes(b"")
    path.chmod(0o644)
    with path.open("wb") as out:
        p = subprocess.run(
            [sys.executable, "-m", "meshnode", "pubkey"],
            input=KEY.encode(),
            stdout=out,
            stderr=subprocess.PIPE,
        )
    assert (path.read_bytes(), p.stderr, p.returncode) == (PUB.encode() + b"\n", b"", 0)


def test_help_and_no_arguments() -> None:
    help_ = meshnode("--help")
    assert (help_.stderr, help_.returncode) == (b"", 0)
    assert help_.stdout.startswith(b"Usage: meshnode <cmd> [<args>]\n")
    for name in ("genkey", "genpsk", "pubkey"):
        assert f"\n  {name}: ".encode() in help_.stdout
    assert meshnode() == (help_.stdout, b"", 1)


def test_invalid_subcommand() -> None:
    r = meshnode("frobnicate")
    assert (r.stdout, r.returncode) == (b"", 1)
    assert r.stderr == b"Invalid subcommand: `frobnicate'\n" + cli.usage().encode()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("command", ["genkey", "genpsk"])
def test_failed_write_still_succeeds_like_wg(command: str) -> None:
    """wg ignores puts() failing, so `wg genkey >/dev/full` exits 0 silently."""
    with open("/dev/full", "wb") as full:
        p = subprocess.run(
            [sys.executable, "-m", "meshnode", command], stdout=full, stderr=subprocess.PIPE
        )
    assert (p.stderr, p.returncode) == (b"", 0)
