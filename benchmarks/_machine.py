"""Facts about the machine and the run: CPU, flags, versions, and how busy others kept it."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoadMeter", "machine_facts", "steady_heap"]

_FLAGS = ("aes", "vaes", "avx2", "avx512f", "vpclmulqdq", "pclmulqdq", "sha_ni")
_PACKAGES = (
    "envelope",
    "cryptography",
    "aws-encryption-sdk",
    "tink",
    "azure-keyvault-keys",
    "azure-identity",
    "azure-core",
    "matplotlib",
    "psutil",
)


def _cpuinfo() -> tuple[str, list[str]]:
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, [flag for flag in _FLAGS if flag in flags]


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def machine_facts() -> dict[str, Any]:
    from cryptography.hazmat.backends.openssl import backend

    model, flags = _cpuinfo()
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_model": model,
        "cpu_flags": flags,
        "logical_cpus": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "openssl": backend.openssl_version_text(),
        "packages": versions,
        "load_average_at_start": list(os.getloadavg()),
    }


# mallopt(3) parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: The highest mmap threshold glibc accepts on 64-bit, and the value its own dynamic
#: threshold climbs to in a long-running process (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024


def steady_heap() -> dict[str, Any]:
    """Hold glibc's heap in the steady state of a long-running process, for every contender
    alike, and say what was done (it goes into the machine facts).

    By default glibc moves its mmap threshold up as large blocks are freed and returns the
    top of the heap to the kernel once more than twice that threshold is free there. Whether
    a contender's 1 MiB buffers then come back from the heap or as fresh pages from the
    kernel (about 2.7 us of page fault per 4 KiB page on this VM) depends on what ran in the
    process before it: Tink at 1 MiB paid 480 (encrypt) and 736 (decrypt) page faults per
    call after the 1 KiB and 64 KiB cases and none in a process of its own, 4-5x in speed.
    Fixing both thresholds ends that lottery: blocks under 32 MiB are reused from the heap,
    larger ones are mapped fresh for every call (the allocation wall the suite measures).
    """
    facts: dict[str, Any] = {"mmap_threshold": None, "trim_threshold": None}
    if platform.libc_ver()[0] != "glibc":
        return {**facts, "applied": False, "reason": "not glibc: malloc left as it is"}
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    ):
        return {**facts, "applied": False, "reason": "mallopt refused the thresholds"}
    return {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD, "applied": True}


def _own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes spent busy since boot (every core), from /proc/stat."""
    line = _read("/proc/stat")
    if line is None:
        return None
    fields = line.splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadMeter:
    """How much CPU *other* processes used while a block ran, as a share of all cores
    (0.0 idle neighbours, 0.5 = one of two cores busy with someone else's work)."""

    shares: list[float] = field(default_factory=list)
    _wall: float = 0.0
    _busy: float | None = None
    _own: float = 0.0

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._busy = _busy_cpu_seconds()
        self._own = _own_cpu_seconds()

    def stop(self) -> float | None:
        busy = _busy_cpu_seconds()
        if busy is None or self._busy is None:
            return None
        wall = time.perf_counter() - self._wall
        others = (busy - self._busy) - (_own_cpu_seconds() - self._own)
        share = max(0.0, others) / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
        self.shares.append(share)
        return share
