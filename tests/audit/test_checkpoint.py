"""Signed checkpoints: C2SP tlog-checkpoint in a C2SP signed-note, signed only when they extend the last one."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import (
    BadSignature,
    Checkpoint,
    CheckpointError,
    LogSigner,
    MalformedNote,
    NotAnExtension,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
    verifier_key,
)
from audit.merkle import MerkleTree, leaf_hash

ORIGIN = "audit.example.sch.uk/school-urn-100001"
SEED = bytes(range(32))


@pytest.fixture
def signer() -> LogSigner:
    return LogSigner("audit.example.sch.uk", Ed25519PrivateKey.from_private_bytes(SEED))


@pytest.fixture
def tree() -> MerkleTree:
    return MerkleTree(leaf_hash(i.to_bytes(2, "big")) for i in range(21))


def head(tree: MerkleTree, size: int) -> Checkpoint:
    return Checkpoint(ORIGIN, size, tree.root(size))


def test_note_has_the_checkpoint_text_and_a_c2sp_signature_line(signer: LogSigner, tree: MerkleTree) -> None:
    note = sign_checkpoint(head(tree, 21), signer, previous=None)
    text, sig_line = note.split("\n\n")
    assert text == f"{ORIGIN}\n21\n{base64.b64encode(tree.root()).decode()}"
    dash, name, blob = sig_line.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", "audit.example.sch.uk")
    raw = base64.b64decode(blob)
    public = signer.private_key.public_key().public_bytes_raw()
    assert raw[:4] == hashlib.sha256(b"audit.example.sch.uk\n\x01" + public).digest()[:4]
    assert len(raw) == 4 + 64
    assert note.endswith("\n")


def test_sign_and_verify_round_trip(signer: LogSigner, tree: MerkleTree) -> None:
    note = sign_checkpoint(head(tree, 21), signer, previous=None)
    verifier = NoteVerifier.parse(verifier_key(signer.name, signer.private_key.public_key()))
    assert open_checkpoint(note, verifier) == head(tree, 21)


def test_verifier_key_has_the_note_format(signer: LogSigner) -> None:
    vkey = verifier_key(signer.name, signer.private_key.public_key())
    name, hex_id, b64 = vkey.split("+", 2)
    assert name == signer.name and hex_id == signer.verifier.key_id.hex() and len(hex_id) == 8
    assert base64.b64decode(b64) == b"\x01" + signer.private_key.public_key().public_bytes_raw()
    with pytest.raises(CheckpointError):
        NoteVerifier.parse(f"{name}+00000000+{b64}")


def test_a_note_from_another_key_is_refused(signer: LogSigner, tree: MerkleTree) -> None:
    note = sign_checkpoint(head(tree, 21), signer, previous=None)
    stranger = LogSigner(signer.name, Ed25519PrivateKey.generate())
    with pytest.raises(BadSignature):
        open_checkpoint(note, stranger.verifier)
    forged = sign_checkpoint(head(tree, 21), stranger, previous=None)
    with pytest.raises(BadSignature):
        open_checkpoint(forged, signer.verifier)


@pytest.mark.parametrize("position", [0, 40, 46, 80, 110, 130])
def test_a_note_with_one_byte_changed_is_refused(signer: LogSigner, tree: MerkleTree, position: int) -> None:
    note = sign_checkpoint(head(tree, 21), signer, previous=None).encode()
    assert position < len(note)
    changed = bytearray(note)
    changed[position] ^= 0x01
    with pytest.raises((CheckpointError, UnicodeDecodeError)):
        open_checkpoint(changed.decode(), signer.verifier)


def test_other_signatures_on_the_note_are_ignored(signer: LogSigner, tree: MerkleTree) -> None:
    note = sign_checkpoint(head(tree, 21), signer, previous=None)
    witness = LogSigner("witness.example", Ed25519PrivateKey.generate())
    cosigned = note + witness.sign_note(head(tree, 21).text()).split("\n\n")[1]
    assert open_checkpoint(cosigned, signer.verifier).size == 21


def test_a_checkpoint_that_extends_the_last_is_signed(signer: LogSigner, tree: MerkleTree) -> None:
    proof = tree.consistency_proof(13, 21)
    note = sign_checkpoint(head(tree, 21), signer, previous=head(tree, 13), consistency_proof=proof)
    assert open_checkpoint(note, signer.verifier).size == 21


def test_a_checkpoint_that_does_not_extend_the_last_is_refused(signer: LogSigner, tree: MerkleTree) -> None:
    rewritten = MerkleTree(leaf_hash(i.to_bytes(2, "big")) for i in [*range(12), 999, *range(13, 21)])
    proof = rewritten.consistency_proof(13, 21)
    with pytest.raises(NotAnExtension):
        sign_checkpoint(head(rewritten, 21), signer, previous=head(tree, 13), consistency_proof=proof)
    with pytest.raises(NotAnExtension):  # no proof at all
        sign_checkpoint(head(tree, 21), signer, previous=head(tree, 13))
    with pytest.raises(NotAnExtension):  # a smaller tree
        sign_checkpoint(head(tree, 13), signer, previous=head(tree, 21))
    with pytest.raises(NotAnExtension):  # another log
        other = Checkpoint("elsewhere.example/log", 21, tree.root())
        sign_checkpoint(other, signer, previous=head(tree, 13), consistency_proof=tree.consistency_proof(13))


def test_malformed_checkpoints_are_refused(signer: LogSigner, tree: MerkleTree) -> None:
    root = base64.b64encode(tree.root()).decode()
    texts = [
        f"{ORIGIN}\n021\n{root}\n",  # leading zero
        f"{ORIGIN}\n21\n{root}",  # no final newline
        f"{ORIGIN}\n21\nnot-base64\n",
        f"{ORIGIN}\n-1\n{root}\n",
        f"{ORIGIN}\n21\n{root}\nextension\n",
    ]
    for text in texts:
        with pytest.raises(MalformedNote):
            open_checkpoint(signer.sign_note(text), signer.verifier)
