"""Signed tree heads: C2SP tlog-checkpoint notes with an Ed25519 C2SP signed-note signature.

Checkpoint text (c2sp.org/tlog-checkpoint), each line ending in "\\n":

    <origin>
    <tree size, decimal, no leading zeros>
    <base64 of the 32-byte RFC 6962 root hash>

Signed note (c2sp.org/signed-note): the text, one empty line, then one line per signature:
"\\u2014 <key name> <base64(key ID || 64-byte Ed25519 signature over the text)>\\n", where
key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]. The verifier key, as
golang.org/x/mod/sumdb/note writes it, is "<key name>+<key ID, 8 hex digits>+<base64(0x01 || public key)>".

A log must never sign two checkpoints that cannot be proved consistent, so `sign_checkpoint` takes the
previous checkpoint and a consistency proof and refuses a checkpoint that does not provably extend it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.merkle import HASH_SIZE, InvalidProof, verify_consistency

ED25519_TYPE = b"\x01"
EM_DASH = "\u2014"
MAX_SIGNATURES = 100


class CheckpointError(ValueError):
    """A note or checkpoint that cannot be trusted; the message says why."""


class MalformedNote(CheckpointError):
    pass


class BadSignature(CheckpointError):
    pass


class NotAnExtension(CheckpointError):
    """Refused: the new checkpoint does not provably extend the previous one."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes

    def __post_init__(self) -> None:
        if not self.origin or any(c.isspace() for c in self.origin) or "+" in self.origin:
            raise MalformedNote(f"origin {self.origin!r} must be non-empty, without spaces or '+'")
        if self.size < 0:
            raise MalformedNote(f"tree size {self.size} is negative")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedNote(f"root hash is {len(self.root_hash)} bytes, not {HASH_SIZE}")

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root_hash).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) != 4 or lines[3] != "":
            raise MalformedNote("a checkpoint is exactly three lines (origin, size, root), each ending in \\n")
        origin, size, root = lines[:3]
        if not size.isdecimal() or not size.isascii() or (size != "0" and size.startswith("0")):
            raise MalformedNote(f"tree size {size!r} is not a decimal without leading zeros")
        return cls(origin, int(size), _b64decode(root, f"root hash {root!r}"))


def _b64decode(text: str, what: str) -> bytes:
    """Strict base64: a changed padding bit or a missing '=' is a changed note, not the same one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise MalformedNote(f"{what} is not base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise MalformedNote(f"{what} is not canonical base64")
    return raw


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public_key.public_bytes_raw()).digest()[:4]


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    name: str
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def encode(self) -> str:
        """The verifier key: <name>+<hex key ID>+<base64(0x01 || public key)>."""
        raw = ED25519_TYPE + self.public_key.public_bytes_raw()
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(raw).decode()}"

    @classmethod
    def parse(cls, text: str) -> NoteVerifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise CheckpointError("a verifier key is <name>+<key id hex>+<base64 key>")
        name, hex_id, b64 = parts
        _check_key_name(name)
        raw = _b64decode(b64, "verifier key")
        try:
            wanted_id = bytes.fromhex(hex_id)
        except ValueError as exc:
            raise CheckpointError(f"verifier key id {hex_id!r} is not hex") from exc
        if len(raw) != 33 or raw[:1] != ED25519_TYPE or len(hex_id) != 8:
            raise CheckpointError("verifier key is not an Ed25519 (type 0x01) key with a 4-byte key id")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id != wanted_id:
            raise CheckpointError(f"verifier key id {hex_id} does not match its name and key")
        return verifier


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    _check_key_name(name)
    return NoteVerifier(name, public_key).encode()


@dataclass(frozen=True, slots=True)
class LogSigner:
    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_key_name(self.name)

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.private_key.public_key())

    def sign_note(self, text: str) -> str:
        signature = self.private_key.sign(text.encode())
        blob = base64.b64encode(self.verifier.key_id + signature).decode()
        return f"{text}\n{EM_DASH} {self.name} {blob}\n"


def sign_checkpoint(
    checkpoint: Checkpoint,
    signer: LogSigner,
    *,
    previous: Checkpoint | None,
    consistency_proof: Sequence[bytes] = (),
) -> str:
    """The signed note of `checkpoint`, if it provably extends `previous` (None only for a log's first)."""
    if previous is not None:
        if previous.origin != checkpoint.origin:
            raise NotAnExtension(f"origin {checkpoint.origin!r} differs from {previous.origin!r}")
        try:
            verify_consistency(
                previous.size, checkpoint.size, previous.root_hash, checkpoint.root_hash, consistency_proof
            )
        except InvalidProof as exc:
            raise NotAnExtension(
                f"size {checkpoint.size} does not provably extend size {previous.size}: {exc}"
            ) from exc
    return signer.sign_note(checkpoint.text())


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The text and the (key name, key ID || signature) pairs of a signed note; checks only its shape."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise MalformedNote("a note may contain no control characters other than newline")
    if not note.endswith("\n"):
        raise MalformedNote("a note ends with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise MalformedNote("no blank line between the text and the signatures")
    text, sig_lines = note[: cut + 1], note[cut + 2 : -1].split("\n")
    if len(sig_lines) > MAX_SIGNATURES:
        raise MalformedNote(f"more than {MAX_SIGNATURES} signatures")
    signatures: list[tuple[str, bytes]] = []
    for line in sig_lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH or not parts[1]:
            raise MalformedNote(f"not a signature line: {line[:80]!r}")
        blob = _b64decode(parts[2], f"signature of {parts[1]!r}")
        if len(blob) < 5:
            raise MalformedNote(f"signature of {parts[1]!r} is too short")
        signatures.append((parts[1], blob))
    return text, signatures


def open_note(note: str, verifier: NoteVerifier) -> str:
    """The text of `note` once a signature by `verifier` checks out; other keys' signatures are ignored."""
    text, signatures = split_note(note)
    wanted = verifier.key_id
    verified = False
    for name, blob in signatures:
        if name != verifier.name or blob[:4] != wanted:
            continue
        try:
            verifier.public_key.verify(blob[4:], text.encode())
        except InvalidSignature as exc:
            raise BadSignature(f"the signature by {name} does not match the note") from exc
        verified = True
    if not verified:
        raise BadSignature(f"the note carries no signature by {verifier.name} ({wanted.hex()})")
    return text


def open_checkpoint(note: str, verifier: NoteVerifier) -> Checkpoint:
    """Parse a signed checkpoint note and verify its signature; raise CheckpointError otherwise."""
    return Checkpoint.parse(open_note(note, verifier))
