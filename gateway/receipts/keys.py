"""The gateway's key pair, kept as a 0600 file holding the secret in hex."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from coincurve import PrivateKey

from .nip19 import npub_encode, nsec_encode


class KeyFileError(RuntimeError):
    pass


@dataclass(frozen=True)
class KeyPair:
    secret: bytes = field(repr=False)

    @property
    def pubkey(self) -> str:
        """x-only public key, lowercase hex, as NIP-01 wants it."""
        return PrivateKey(self.secret).public_key_xonly.format().hex()

    @property
    def npub(self) -> str:
        return npub_encode(self.pubkey)

    def nsec(self) -> str:
        return nsec_encode(self.secret.hex())

    def pseudonym(self, purpose: str, value: str) -> str:
        """A stable salted hash (people's platform ids, room ids): same input, same output
        on this install; unlinkable across installs; the salt never leaves the key file."""
        salt = hashlib.sha256(b"potluck/pseudonym/" + purpose.encode() + self.secret).digest()
        return hmac.new(salt, value.encode(), hashlib.sha256).hexdigest()

    def output_salt(self, receipt_salt: bytes) -> bytes:
        """The salt of a tool call's output commitment, derived from its receipt's own salt
        with a key that never leaves the key file: the install can always open an output
        commitment (nothing more is stored), and a reveal of the command (its salt made
        public) gives nobody the output's salt, so a short output stays unguessable."""
        key = hashlib.sha256(b"potluck/output-salt/1\x00" + self.secret).digest()
        return hmac.new(key, receipt_salt, hashlib.sha256).digest()

    @classmethod
    def generate(cls) -> KeyPair:
        while True:
            candidate = secrets.token_bytes(32)
            try:
                PrivateKey(candidate)
            except ValueError:  # zero or ≥ n: astronomically rare
                continue
            return cls(candidate)


def write_key_file(path: Path, pair: KeyPair) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(pair.secret.hex() + "\n")


def read_key_file(path: Path) -> KeyPair:
    """Refuses a key file others can read, as ssh does: a leaked key forges receipts."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise KeyFileError(f"no key file at {path}; run `potluck init`") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is readable by others (mode {oct(mode & 0o777)}); run `chmod 600 {path}`"
        )
    try:
        secret = bytes.fromhex(text)
        PrivateKey(secret)
    except ValueError:
        raise KeyFileError(f"{path} does not hold a 64-hex secret key") from None
    if len(secret) != 32:
        raise KeyFileError(f"{path} does not hold a 32-byte secret key")
    return KeyPair(secret)
