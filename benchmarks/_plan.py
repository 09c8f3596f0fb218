"""The plan of a run: which message sizes each case measures, how many rounds and messages,
for the full run or for ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GiB", "KiB", "MiB", "Plan"]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


_FULL_SECONDS = {
    "one-shot": 140.0,
    "1 KiB cache": 4.0,
    "layers": 15.0,
    "frame sizes": 20.0,
    "thread scaling": 20.0,
    "allocation wall": 50.0,
    "stream": 55.0,
    "key vault": 13.0,
    "key vault under load": 100.0,
    "records": 15.0,
    "blob": 60.0,
}
_QUICK_SECONDS = {
    "one-shot": 6.0,
    "1 KiB cache": 1.0,
    "layers": 1.0,
    "frame sizes": 1.0,
    "thread scaling": 1.0,
    "allocation wall": 1.0,
    "stream": 3.0,
    "key vault": 4.0,
    "key vault under load": 12.0,
    "records": 5.0,
    "blob": 15.0,
}


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or ``--quick`` for smoke tests."""

    quick: bool
    sizes: tuple[int, ...]
    rounds_small: int
    rounds_large: int
    min_sample_s: float
    layer_sizes: tuple[int, ...]
    frame_sizes: tuple[int, ...]
    frame_message: int
    wall_sizes: tuple[int, ...]
    stream_size: int
    stream_repeats: int
    kv_cached: int
    kv_uncached: int
    kv_budget_s: float
    #: Blob Storage: the size of the blob, and the interleaved rounds of each operation.
    blob_size: int
    blob_rounds: int
    #: The peers are measured up to this size, that of the targets: beyond it a call takes
    #: them seconds (the AWS Encryption SDK is flat from 1 MiB up, Tink falls off).
    peer_max_size: int

    @classmethod
    def full(cls) -> Plan:
        return cls(
            quick=False,
            sizes=(KiB, 64 * KiB, MiB, 64 * MiB, 256 * MiB),
            # Many short samples: more of them fall in the machine's fast phases and
            # between other processes' time slices (see _timing).
            rounds_small=25,
            rounds_large=5,
            min_sample_s=0.01,
            layer_sizes=(KiB, 64 * MiB),
            frame_sizes=(16 * KiB, 32 * KiB, 64 * KiB, 128 * KiB, 256 * KiB, MiB),
            frame_message=64 * MiB,
            wall_sizes=(64 * MiB, 256 * MiB),
            stream_size=GiB,
            stream_repeats=3,
            kv_cached=10_000,
            kv_uncached=100,
            kv_budget_s=15.0,
            blob_size=64 * MiB,
            blob_rounds=3,
            peer_max_size=64 * MiB,
        )

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(
            quick=True,
            sizes=(KiB, 64 * KiB, MiB),
            rounds_small=5,
            rounds_large=3,
            min_sample_s=0.005,
            layer_sizes=(KiB,),
            frame_sizes=(16 * KiB, 64 * KiB, 256 * KiB),
            frame_message=MiB,
            wall_sizes=(MiB,),
            stream_size=16 * MiB,
            stream_repeats=1,
            kv_cached=100,
            kv_uncached=5,
            kv_budget_s=3.0,
            blob_size=8 * MiB,
            blob_rounds=2,
            peer_max_size=64 * MiB,
        )

    def expected_seconds(self) -> dict[str, float]:
        """Seconds each case took on the reference machine (2 cores, quiet): the progress
        estimate's starting point when no earlier run of the same kind is at hand."""
        if self.quick:
            return dict(_QUICK_SECONDS)
        return dict(_FULL_SECONDS)

    def warmup(self, size: int) -> bool:
        """Whether a contender gets a call before its calibration call. Setting up every
        contender already made one call of each operation; from 64 MiB up a call is long
        enough that the imports and lazy tables of a first call do not show."""
        return size < 64 * MiB

    def rounds(self, size: int) -> int:
        if size >= 256 * MiB:
            return 3  # the slowest peer takes seconds per 256 MiB call
        return self.rounds_large if size >= 64 * MiB else self.rounds_small
