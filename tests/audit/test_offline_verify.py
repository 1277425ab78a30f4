"""The standalone export verifier: an intact export passes, any changed byte, missing or moved record fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.chain import AuditRecord
from audit.checkpoint import Checkpoint, LogSigner, sign_checkpoint
from audit.merkle import MerkleTree
from audit.offline_verify import main, write_export

ORIGIN = "audit.example.sch.uk/school-urn-100001"
Chain = Callable[..., list[AuditRecord]]


@pytest.fixture
def export(tmp_path: Path, chain_of: Chain) -> Path:
    return signed_export(tmp_path / "export", chain_of(30), _signer())


def _signer() -> LogSigner:
    return LogSigner("audit.example.sch.uk", Ed25519PrivateKey.generate())


def signed_export(directory: Path, records: list[AuditRecord], signer: LogSigner) -> Path:
    tree = MerkleTree(r.leaf_hash for r in records)
    notes: list[str] = []
    previous: Checkpoint | None = None
    for size in (0, 10, 25, 30):
        checkpoint = Checkpoint(ORIGIN, size, tree.root(size))
        proof = tree.consistency_proof(previous.size, size) if previous else []  # the first has no proof
        notes.append(sign_checkpoint(checkpoint, signer, previous=previous, consistency_proof=proof))
        previous = checkpoint
    return write_export(directory, records, notes, signer.verifier.encode())


def school_key(export: Path) -> str:
    """The verifier key as the school gives it to a reviewer (read here from the untouched export)."""
    return (export / "public_key.txt").read_text().strip()


def run_cli(directory: Path, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audit.offline_verify", str(directory), "--key", key],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def changed_copy(export: Path, name: str, edit: Callable[[bytes], bytes]) -> Path:
    copy = export.parent / f"changed-{name}"
    shutil.copytree(export, copy)
    path = copy / name
    path.write_bytes(edit(path.read_bytes()))
    return copy


def flip(offset: int) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        b = bytearray(data)
        b[offset] ^= 0x01
        return bytes(b)

    return edit


def test_export_layout(export: Path) -> None:
    assert sorted(p.name for p in export.iterdir()) == ["checkpoints.txt", "public_key.txt", "records.jsonl"]
    assert len((export / "records.jsonl").read_bytes().splitlines()) == 30
    assert (export / "checkpoints.txt").read_text().count("\n\n") == 8  # two per note


def test_an_intact_export_verifies_offline(export: Path) -> None:
    done = run_cli(export, school_key(export))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "intact: 30 records, 4 checkpoints"


def test_an_export_with_one_byte_changed_is_refused(export: Path) -> None:
    text = (export / "records.jsonl").read_bytes()
    line_17 = sum(len(line) for line in text.splitlines(True)[:16])
    offset = text.index(b"ICT suite", line_17) + 2  # "ICT" becomes "IBT" in record 17's event
    changed = changed_copy(export, "records.jsonl", flip(offset))
    done = run_cli(changed, school_key(export))
    assert done.returncode == 1
    assert done.stdout.startswith("NOT intact") and "line 17: record 17 changed" in done.stdout, done.stdout


def test_the_verifier_imports_nothing_of_the_project_but_itself() -> None:
    probe = (
        "import sys, audit.offline_verify; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('common', 'pydantic') "
        "or m in ('audit.chain', 'audit.merkle', 'audit.checkpoint')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        ("records.jsonl", lambda b: _upper_first_hash(b), "line 1: record 1 changed"),
        ("records.jsonl", lambda b: b.replace(b'"seq":3,', b'"seq": 3,'), "line 3: not in canonical form"),
        ("records.jsonl", lambda b: _drop_line(b, 11), "record 12 is missing"),
        ("records.jsonl", lambda b: b"".join(b.splitlines(True)[:28]), "covers 30 records"),
        ("records.jsonl", lambda b: _swap(b, 4, 5), "record 5 is out of order"),
        ("records.jsonl", lambda b: b.replace(b"inappropriate", b"security", 1), "line 1"),
        ("checkpoints.txt", flip(60), "checkpoint"),
        ("checkpoints.txt", lambda b: b.replace(b"\n25\n", b"\n26\n"), "checkpoint 3"),
        ("checkpoints.txt", lambda b: b"", "no signed checkpoint"),
        ("public_key.txt", flip(30), "public_key"),
    ],
    ids=[
        "hash-case", "not-canonical", "deleted", "truncated", "reordered",
        "edited", "note-byte", "note-size", "no-notes", "key",
    ],
)
def test_each_kind_of_tampering_is_named(
    export: Path, name: str, edit: Callable[[bytes], bytes], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(changed_copy(export, name, edit)), "--trust-export-key"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("NOT intact") and expected in out, out


def test_every_single_byte_change_in_a_note_is_refused(export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = (export / "checkpoints.txt").read_bytes()
    first_note_end = notes.index(b"\n\n", notes.index(b"\n\n") + 2)
    for offset in range(first_note_end):
        code = main([str(changed_copy(export, "checkpoints.txt", flip(offset))), "--key", school_key(export)])
        shutil.rmtree(export.parent / "changed-checkpoints.txt")
        assert code != 0, f"byte {offset} changed and still accepted"
    capsys.readouterr()


def test_an_export_rewritten_and_signed_again_with_another_key_is_refused(
    export: Path, tmp_path: Path, chain_of: Chain, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever rewrites an export can recompute its chain, sign new checkpoints with a key of their own and put
    that key in public_key.txt: checked against itself it is intact. Against the school's key it is not."""
    forged = signed_export(tmp_path / "forged", chain_of(30), _signer())
    assert main([str(forged), "--key", school_key(export)]) == 1
    assert "not the key you trust" in capsys.readouterr().out
    assert main([str(forged), "--trust-export-key"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("intact: 30 records") and "not who signed it" in out
    key_file = tmp_path / "school.key"
    key_file.write_text(school_key(export) + "\n")
    assert main([str(export), "--key", str(key_file)]) == 0
    assert capsys.readouterr().out.strip() == "intact: 30 records, 4 checkpoints"


def test_a_missing_export_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nowhere"), "--trust-export-key"]) == 2
    assert main([]) == 2
    assert main([str(tmp_path / "nowhere")]) == 2  # a key to check against, or --trust-export-key, is required
    capsys.readouterr()


def _upper_first_hash(data: bytes) -> bytes:
    start = data.index(b'"hash":"') + 8
    return data[:start] + data[start : start + 64].upper() + data[start + 64 :]


def _drop_line(data: bytes, index: int) -> bytes:
    return b"".join(line for i, line in enumerate(data.splitlines(True)) if i != index)


def _swap(data: bytes, i: int, j: int) -> bytes:
    lines = data.splitlines(True)
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines)
