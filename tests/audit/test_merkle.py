"""RFC 6962 hashing and proofs, checked against the independent transparency-dev/merkle vectors."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest

from audit.merkle import (
    EMPTY_ROOT,
    InvalidProof,
    MerkleTree,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "vectors"
REFERENCE = json.loads((VECTORS / "rfc6962_tree.json").read_text())
LEAVES = [leaf_hash(bytes.fromhex(x)) for x in REFERENCE["leaf_inputs_hex"]]
ROOTS = [bytes.fromhex(x) for x in REFERENCE["root_hashes_hex_by_size"]]


def _vectors(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).glob("*/*.json"))
    assert files, f"no {kind} vectors"
    return [pytest.param(json.loads(f.read_text()), id=f"{f.parent.name}/{f.stem}") for f in files]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _proof(v: dict[str, Any]) -> list[bytes]:
    return [_b64(p) for p in v["proof"] or []]


def test_reference_tree_roots_match_rfc6962_for_every_size() -> None:
    tree = MerkleTree()
    assert tree.root() == EMPTY_ROOT == ROOTS[0]
    for size, leaf in enumerate(LEAVES, 1):
        tree.append(leaf)
        assert tree.root() == ROOTS[size]
        assert root_hash(LEAVES[:size]) == ROOTS[size]
    assert [tree.root(n) for n in range(9)] == ROOTS
    assert [MerkleTree(LEAVES[:n]).root() for n in range(9)] == ROOTS


@pytest.mark.parametrize("v", _vectors("inclusion"))
def test_inclusion_vector(v: dict[str, Any]) -> None:
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], _proof(v), _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(InvalidProof):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)
        generated = MerkleTree(LEAVES).inclusion_proof(v["leafIdx"], v["treeSize"])
        assert generated == _proof(v)


@pytest.mark.parametrize("v", _vectors("consistency"))
def test_consistency_vector(v: dict[str, Any]) -> None:
    args = (v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), _proof(v))
    if v["wantErr"]:
        with pytest.raises(InvalidProof):
            verify_consistency(*args)
    else:
        verify_consistency(*args)
        assert MerkleTree(LEAVES).consistency_proof(v["size1"], v["size2"]) == _proof(v)


def test_every_generated_proof_in_small_trees_verifies() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(40)]
    tree = MerkleTree(leaves)
    for size in range(1, 41):
        root = tree.root(size)
        assert root == root_hash(leaves[:size])
        for index in range(size):
            verify_inclusion(leaves[index], index, size, tree.inclusion_proof(index, size), root)
        for old in range(0, size + 1):
            verify_consistency(old, size, tree.root(old), root, tree.consistency_proof(old, size))


def test_a_proof_for_another_leaf_or_a_shrunk_tree_is_refused() -> None:
    tree = MerkleTree(leaf_hash(bytes([i])) for i in range(13))
    with pytest.raises(InvalidProof):
        verify_inclusion(tree.leaf(4), 5, 13, tree.inclusion_proof(4), tree.root())
    with pytest.raises(InvalidProof):
        verify_consistency(13, 7, tree.root(), tree.root(7), [])


def test_proofs_over_a_million_leaves_have_logarithmically_many_hashes_and_verify() -> None:
    # Behaviour only; proof generation time is measured by `make bench` (bench/audit.py).
    n = 1_000_000
    bound = math.ceil(math.log2(n)) + 1
    tree = MerkleTree(leaf_hash(i.to_bytes(4, "big")) for i in range(n))
    root = tree.root()
    for index in (0, 1, 333_333, 524_287, 524_288, n - 1):
        proof = tree.inclusion_proof(index)
        assert len(proof) <= bound
        verify_inclusion(tree.leaf(index), index, n, proof, root)
    for old in (1, 7, 524_288, 999_999):
        proof = tree.consistency_proof(old)
        assert len(proof) <= bound
        verify_consistency(old, n, tree.root(old), root, proof)
