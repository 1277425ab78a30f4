"""RFC 6962 Merkle tree hashing with inclusion and consistency proofs (RFC 9162 section 2.1).

Hashes: a leaf is SHA-256(0x00 || data), an interior node SHA-256(0x01 || left || right), the empty tree
SHA-256(""). A tree of n > 1 leaves splits at k, the largest power of two below n: MTH(D[0:n]) =
node(MTH(D[0:k]), MTH(D[k:n])).

`MerkleTree` keeps every complete subtree hash, level by level (level h holds the hashes of the aligned
2**h-leaf subtrees, packed 32 bytes each in a bytearray), so a root at any earlier size or a proof costs
O(log^2 n) lookups and at most O(log n) fresh hashes, never a rehash of the leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class InvalidProof(ValueError):
    """A proof that does not show what it claims; the message says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly below `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def root_hash(leaf_hashes: Iterable[bytes]) -> bytes:
    """The tree head of the given leaf hashes, streamed with a stack of complete subtrees (O(log n) memory)."""
    stack: list[tuple[int, bytes]] = []  # (leaf count, hash), counts strictly decreasing powers of two
    for h in leaf_hashes:
        count, node = 1, h
        while stack and stack[-1][0] == count:
            left_count, left = stack.pop()
            count, node = left_count + count, node_hash(left, node)
        stack.append((count, node))
    if not stack:
        return EMPTY_ROOT
    node = stack.pop()[1]
    while stack:
        node = node_hash(stack.pop()[1], node)
    return node


class MerkleTree:
    """An append-only tree of leaf hashes that answers roots and proofs for any size up to its own."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        leaves = bytearray()
        for h in leaf_hashes:
            _check_hash(h, "leaf hash")
            leaves += h
        if leaves:
            self._bulk_load(leaves)

    def _bulk_load(self, leaves: bytearray) -> None:
        self._levels = [leaves]
        self._size = len(leaves) // HASH_SIZE
        level = leaves
        sha256 = hashlib.sha256
        while len(level) >= 2 * HASH_SIZE:
            upper = bytearray()
            for i in range(0, len(level) - HASH_SIZE, 2 * HASH_SIZE):
                upper += sha256(b"\x01" + level[i : i + 2 * HASH_SIZE]).digest()
            self._levels.append(upper)
            level = upper

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (already leaf_hash()ed) and every complete subtree it closes."""
        _check_hash(leaf, "leaf hash")
        self._levels[0] += leaf
        self._size += 1
        index, height, node = self._size - 1, 0, leaf
        while index & 1:
            left = self._node(height, index - 1)
            node = node_hash(left, node)
            height += 1
            index >>= 1
            if height == len(self._levels):
                self._levels.append(bytearray())
            self._levels[height] += node

    def append_data(self, data: bytes) -> None:
        self.append(leaf_hash(data))

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise IndexError(f"leaf {index} is outside a tree of {self._size} leaves")
        return self._node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """The tree head of the first `size` leaves (all of them by default)."""
        n = self._checked_size(size)
        return EMPTY_ROOT if n == 0 else self._range(0, n)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 6962 2.1.1, ordered from the leaf upwards."""
        n = self._checked_size(size)
        if not 0 <= index < n:
            raise ValueError(f"leaf {index} is not in a tree of {n} leaves")
        top_down: list[bytes] = []
        lo, hi = 0, n
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                top_down.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                top_down.append(self._range(lo, lo + k))
                lo += k
        return top_down[::-1]

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) of RFC 6962 2.1.2, ordered as the RFC prints it."""
        n = self._checked_size(new_size)
        if not 0 <= old_size <= n:
            raise ValueError(f"no consistency proof from size {old_size} to size {n}")
        if old_size in (0, n):
            return []
        top_down: list[bytes] = []
        lo, hi, m, whole = 0, n, old_size, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                top_down.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                top_down.append(self._range(lo, lo + k))
                lo, m, whole = lo + k, m - k, False
        if not whole:
            top_down.append(self._range(lo, hi))
        return top_down[::-1]

    def _checked_size(self, size: int | None) -> int:
        n = self._size if size is None else size
        if not 0 <= n <= self._size:
            raise ValueError(f"size {n} is beyond a tree of {self._size} leaves")
        return n

    def _node(self, height: int, index: int) -> bytes:
        start = index * HASH_SIZE
        return bytes(self._levels[height][start : start + HASH_SIZE])

    def _range(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a range the RFC's recursion produces (lo aligned to the split of hi - lo)."""
        size = hi - lo
        if size & (size - 1) == 0:
            return self._node(size.bit_length() - 1, lo // size)
        k = _split(size)
        return node_hash(self._node(k.bit_length() - 1, lo // k), self._range(lo + k, hi))


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise InvalidProof(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that `leaf` (a leaf hash) is leaf `index` of the tree of `size` leaves with head `root`
    (RFC 9162 2.1.3.2); raise InvalidProof otherwise."""
    if not 0 <= index < size:
        raise InvalidProof(f"leaf {index} is not in a tree of {size} leaves")
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    fn, sn, r = index, size - 1, leaf
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
        if sn == 0:
            raise InvalidProof(f"proof is longer than the path: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise InvalidProof(f"proof is shorter than the path: {len(proof)} hashes")
    if r != root:
        raise InvalidProof("the path does not lead to the given root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of `new_size` leaves with head `new_root` extends the tree of `old_size` leaves
    with head `old_root` (RFC 9162 2.1.4.2); raise InvalidProof otherwise."""
    if not 0 <= old_size <= new_size:
        raise InvalidProof(f"size {new_size} cannot extend size {old_size}")
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    if old_size == new_size or old_size == 0:
        if proof:
            raise InvalidProof(f"expected an empty proof from size {old_size} to {new_size}")
        if old_size == new_size and old_root != new_root:
            raise InvalidProof(f"two different roots for the same size {old_size}")
        return
    if not proof:
        raise InvalidProof("empty proof for a growing tree")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof(f"proof is longer than needed: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise InvalidProof(f"proof is shorter than needed: {len(proof)} hashes")
    if fr != old_root:
        raise InvalidProof("proof does not reproduce the old root")
    if sr != new_root:
        raise InvalidProof("proof does not reproduce the new root")
