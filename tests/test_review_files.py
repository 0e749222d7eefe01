"""Adversarial review (issue 13 follow-up): hostile cards and files on the local disk.

Each test is one attack against the real code (no mocks), fails on the code as reviewed,
and says in its docstring how bad it is and the smallest fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.backup import backup
from gateway.config import load_config, make_home
from gateway.receipts.keys import KeyPair, write_key_file
from gateway.store.db import Store
from runtime.recipes import RecipeError
from runtime.recipes.sillytavern import import_card

from .support import ROOT

# -- character cards -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Bad\\1", "Zoë \\g<7>", "A\\"])
def test_a_card_name_with_a_backslash_is_imported_or_refused_cleanly(name: str) -> None:
    """Severity: low. `card_to_recipe.fill` passes the card's name to `re.sub` as the
    *replacement*, where backslashes are group references: a card named `Bad\\1` (or with
    a trailing backslash) makes the import raise `re.error` — no RecipeError, no file or
    field named, a traceback in `potluck recipe import` and "something went wrong" in a
    chat room — and a name with `\\g<0>` is silently rewritten. The attacker gets: a card
    that crashes importers (and a name that changes on its way into the persona).
    Smallest fix: a function replacement, `re.sub(pattern, lambda _: name, text)`."""
    card = {
        "spec": "chara_card_v2",
        "data": {"name": name, "description": "I am {{char}}.", "first_mes": "Hi, {{char}} here."},
    }
    try:
        recipe = import_card(json.dumps(card).encode(), "card.json")
    except RecipeError:
        return  # refused with a reason is fine too
    assert recipe.title == name
    assert f"I am {name}." in recipe.agents[0].persona  # the name, exactly as written


CARD_SCAN = """
import sys
from runtime.recipes import RecipeError
from runtime.recipes.sillytavern import import_card
data = sys.stdin.buffer.read()
try:
    import_card(data, "card.json")
except RecipeError as exc:
    print("refused:", exc)
"""


def test_a_card_of_escaped_quotes_is_refused_without_freezing_the_gateway() -> None:
    """Severity: high. `safe_json.check_shape` (run on every JSON card, every card in a PNG
    and every backup manifest, *before* parsing) cuts strings out with the regex
    `"[^"\\]*(?:\\.[^"\\]*)*"`. On text made of `\\"` pairs with no string that closes,
    every quote is a new start and each start scans to the end: quadratic. 80 KB takes
    ~90 s here; a card at the 4 MiB limit takes days. The scan runs on the event loop
    (a `/recipe import` handler), so while it runs the whole gateway is frozen: every room on
    every platform, the web room, the scheduler. The attacker gets: one card file, imported
    by a room admin (cards are what people trade) or by the owner at the command line,
    stops the gateway. Smallest fix: replace the regex with one linear pass that tracks
    "inside a string / after a backslash" (as runtime/sandbox/protocol.py `_depth` does),
    counting brackets outside strings; and run imports off the event loop."""
    card = b'{"spec": "chara_card_v2", "data": {"name": "x", "description": "'
    card += b'\\"' * 150_000  # 300 KB; never closed, so not JSON either
    try:
        done = subprocess.run(
            [sys.executable, "-c", CARD_SCAN],
            input=card,
            capture_output=True,
            timeout=60,  # a linear scan of 300 KB takes well under a second
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    except subprocess.TimeoutExpired:
        pytest.fail("importing a 300 KB card was still scanning it after 60 s")
    assert done.returncode == 0 and b"refused:" in done.stdout, done.stdout + done.stderr


# -- backups written where others can write -----------------------------------------------


def _install(home: Path) -> object:
    make_home(home)
    write_key_file(home / "gateway.key", KeyPair.generate())
    (home / "config.toml").write_text('[secrets]\nopenai_api_key = "sk-review-secret-0000"\n')
    (home / "config.toml").chmod(0o600)
    config = load_config(env={"POTLUCK_HOME": str(home)})
    Store(config.database_url).close()  # a store, created and migrated
    return config


def _nobody() -> tuple[int, int]:
    user = pwd.getpwnam("nobody")
    return user.pw_uid, user.pw_gid


@pytest.fixture
def shared_tmp(tmp_path: Path) -> Path:
    """A directory like /tmp: world-writable and sticky, where another user can plant."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def test_a_backup_into_a_shared_folder_is_not_written_into_a_file_planted_there(
    tmp_path: Path, shared_tmp: Path
) -> None:
    """Severity: medium. `backup` writes the archive (gateway key, config with API keys,
    tokens, the whole store) to `OUT.partial` opened with O_CREAT|O_TRUNC — no O_EXCL, no
    O_NOFOLLOW — then renames it to OUT. A local user who pre-creates `OUT.partial` (mode
    0666, their own) in a shared folder such as /tmp gets every secret written into their
    file; when the backup runs as root, the rename even makes OUT that user's world-readable
    file. (fs.protected_regular stops this where it is 1; it is 0 on this host, and on many
    containers.) The attacker gets: the gateway's signing key and every API key and token.
    Smallest fix: create the partial with O_EXCL|O_NOFOLLOW (or in a private temporary
    directory beside OUT, via tempfile.mkstemp(dir=OUT.parent)) and refuse to go on if it
    exists."""
    if os.geteuid() != 0:
        pytest.skip("plants a file as another user: needs root")
    config = _install(tmp_path / "home")
    out = shared_tmp / "potluck.backup"
    planted = shared_tmp / "potluck.backup.partial"
    planted.write_bytes(b"")
    os.chown(planted, *_nobody())
    planted.chmod(0o666)
    with contextlib.suppress(OSError):  # refusing is fine; what matters is where secrets go
        backup(config, out)  # type: ignore[arg-type]
    for path in shared_tmp.iterdir():
        info = path.stat()
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            assert info.st_size == 0, (
                f"{path.name} (uid {info.st_uid}, mode {stat.filemode(info.st_mode)}) holds "
                f"{info.st_size} bytes of the backup: the planted file got the secrets"
            )


def test_a_backup_does_not_follow_a_planted_symlink(tmp_path: Path, shared_tmp: Path) -> None:
    """Severity: medium. Same open as above: `OUT.partial` planted as a symlink to a file of
    the person running the backup (or, run as root, to any file: /etc/passwd) is followed,
    and that file is truncated and overwritten with the archive. The attacker gets: any file
    the backup's user can write destroyed (a local denial of service, or root's files when
    an operator backs up as root into /tmp). Smallest fix: O_EXCL|O_NOFOLLOW, as above."""
    config = _install(tmp_path / "home")
    victim = tmp_path / "precious.txt"
    victim.write_text("do not touch\n")
    out = shared_tmp / "potluck.backup"
    (shared_tmp / "potluck.backup.partial").symlink_to(victim)
    with contextlib.suppress(OSError):
        backup(config, out)  # type: ignore[arg-type]
    data = victim.read_bytes()
    if data != b"do not touch\n":
        pytest.fail(f"the backup followed the symlink: its target now holds {len(data)} bytes")
