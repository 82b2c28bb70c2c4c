"""Dedup memory: bytes per run ID, and speed, of ``_dedup.SeenSet`` vs exact alternatives.

Each structure runs in a fresh child process (``python benchmarks/dedup.py --child KIND N``)
that adds N distinct random UUIDs generated on the fly (each string dropped after use, as in
bulkretry) and reports its peak RSS (``ru_maxrss``) minus the RSS before the first add; the
slope between two sizes is the memory per ID. A second child times ``add`` on a pre-generated
list (new IDs, then the same IDs again, which must all be refused) and checks exactness.

Structures:

- ``seenset``: ``bulkretry._io.dedup.SeenSet`` as it is now (a set of 128-bit ints);
- ``set-str``: a set of the UUID strings (the naive way);
- ``set-bytes``: a set of 16-byte ``bytes``;
- ``bucket16``: 65,536 ``bytearray`` buckets chosen by the first 16 bits, each holding the other
  14 bytes of its UUIDs back to back; membership is ``bytearray.find`` (C ``memmem``) at a
  multiple of 14: exact, no hashing of objects, no object per ID;
- ``bucket12``: the same with 4,096 buckets of 15-byte keys (bigger buckets, fewer objects).

Usage: ``.venv/bin/python benchmarks/dedup.py [--quick] [--sizes 100000,1000000] [--kinds ...]``
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import time

from _common import PYTHON, child_env, print_machine, uuid_lines

KINDS = ["seenset", "set-str", "set-bytes", "bucket16", "bucket12"]
TARGET = 40


class BucketSet:
    """An exact set of canonical UUIDs in ``2**bits`` bytearrays (bits: 12 or 16).

    A proposal for ``_dedup.SeenSet``'s UUID part: about 16-20 bytes per ID at 1M, with no
    object per ID; a run of ``find`` in C over a bucket replaces hashing.
    """

    __slots__ = ("_buckets", "_hex", "_width")

    def __init__(self, bits: int = 16) -> None:
        if bits not in (12, 16):
            raise ValueError(bits)
        self._hex = bits // 4
        # Keys keep every byte not fully given by the bucket index: exact, whatever the bits.
        self._width = 14 if bits == 16 else 15
        self._buckets: list[bytearray | None] = [None] * (1 << bits)

    def add(self, run_id: str) -> bool:
        """``run_id`` must be a canonical (lower-case, dashed) UUID; False if already there."""
        digits = run_id.replace("-", "")
        index = int(digits[: self._hex], 16)
        key = bytes.fromhex(digits[32 - 2 * self._width :])
        bucket = self._buckets[index]
        if bucket is None:
            self._buckets[index] = bytearray(key)
            return True
        width = self._width
        at = bucket.find(key)
        while at >= 0:
            if at % width == 0:
                return False
            at = bucket.find(key, at + 1)
        bucket += key
        return True


def make(kind: str):  # type: ignore[no-untyped-def]
    if kind == "seenset":
        from bulkretry._io.dedup import SeenSet

        return SeenSet().add
    if kind == "set-str":
        seen_s: set[str] = set()

        def add_s(run_id: str) -> bool:
            if run_id in seen_s:
                return False
            seen_s.add(run_id)
            return True

        return add_s
    if kind == "set-bytes":
        seen_b: set[bytes] = set()

        def add_b(run_id: str) -> bool:
            key = bytes.fromhex(run_id.replace("-", ""))
            if key in seen_b:
                return False
            seen_b.add(key)
            return True

        return add_b
    if kind == "bucket16":
        return BucketSet(16).add
    if kind == "bucket12":
        return BucketSet(12).add
    raise ValueError(kind)


def rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


def child(kind: str, n: int, mode: str) -> None:
    add = make(kind)
    if mode == "memory":
        before = rss_kb()
        for run_id in uuid_lines(n, random.Random(n)):
            add(run_id)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(max(0, peak - before) * 1024)
        return
    ids = list(uuid_lines(n, random.Random(n)))
    started = time.perf_counter()
    fresh = sum(map(add, ids))
    t_new = time.perf_counter() - started
    started = time.perf_counter()
    again = sum(map(add, ids))
    t_dup = time.perf_counter() - started
    # Near misses (last hex digit changed) must be new: no false positives.
    near = [i[:-1] + ("0" if i[-1] != "0" else "1") for i in ids[:1000]]
    misses = sum(map(add, near))
    if fresh != n or again != 0 or misses != len(set(near) - set(ids)):
        raise SystemExit(f"{kind}: not exact ({fresh}, {again}, {misses})")
    print(t_new / n * 1e9, t_dup / n * 1e9)


def run(kind: str, n: int, mode: str) -> list[float]:
    out = subprocess.run(
        [PYTHON, __file__, "--child", kind, str(n), mode],
        capture_output=True,
        text=True,
        check=True,
        env=child_env(),
    ).stdout
    return [float(x) for x in out.split()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 10,000 and 50,000")
    parser.add_argument("--sizes", help="two comma-separated sizes [100000,1000000]")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return 0
    if args.sizes:
        small, large = (int(x) for x in args.sizes.split(","))
    else:
        small, large = (10_000, 50_000) if args.quick else (100_000, 1_000_000)
    print_machine()
    print(f"dedup structures: {small:,} and {large:,} distinct UUIDs, one child process each")
    print(
        f"{'kind':10s} {'bytes/ID@' + str(large):>16s} {'slope B/ID':>10s} "
        f"{'add new ns':>10s} {'add dup ns':>10s}  target slope <= {TARGET}"
    )
    base: float | None = None
    for kind in args.kinds.split(","):
        lo = run(kind, small, "memory")[0]
        hi = run(kind, large, "memory")[0]
        new_ns, dup_ns = run(kind, large, "speed")
        slope = (hi - lo) / (large - small)
        if kind == "seenset":
            base = new_ns
        speed = f" ({new_ns / base:.2f}x SeenSet)" if base and kind != "seenset" else ""
        print(
            f"{kind:10s} {hi / large:16.1f} {slope:10.1f} {new_ns:10.0f} {dup_ns:10.0f}  "
            f"{'MET' if slope <= TARGET else 'NOT MET'}{speed}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
