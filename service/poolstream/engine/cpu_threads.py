"""CPU thread discipline: only the engine core thread runs multi-threaded torch.

Why this matters: torch's CPU wheels use GNU OpenMP, and libgomp gives every
thread that enters a parallel region its own team of worker threads, kept for
as long as that thread lives. Once the process holds more OpenMP threads than
it has CPUs, libgomp *throttles*: a waiting worker spins ~100 iterations
instead of ~300,000 before it sleeps, so each of the ~100 ops of a forward pays
a futex wake-up. One stray team is enough. Measured on the 2-core CPU with
all-MiniLM-L6-v2 (batches of 12): a single parallel op on the event-loop
thread, or a model load on an executor thread that stays alive, left ~12% of
the CPU idle and made the engine's forward 10-20% slower; with the other
threads at one torch thread each, the CPU was fully used again.

The rules, applied by the engine and the server:

- the core thread sets its own intra-op thread count (``engine_threads``); the
  CPU side lane (engine/core.py) runs on one thread and so starts no team;
- the model is loaded in a short-lived thread (``run_in_fresh_thread``), so the
  team it creates ends with it;
- the server confines every other thread it owns (the event loop and asyncio's
  default executor, where plugins' CPU work runs) to one torch thread
  (``confine_other_threads``). In-process users of ``AsyncEngine`` / ``LLM``
  can call it too.

torch's thread count is per thread, with a trap: ``torch.set_num_threads``
sets the calling thread's OpenMP/MKL count *and* a process default, and a
thread takes that default on its first parallel op, overwriting any count it
set before. ``set_torch_threads`` forces that first initialisation, so the
count it sets sticks whatever other threads set later.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")

# torch's own default (one per physical core), read when the engine package is first
# imported, before anything in the process changes it.
_TORCH_DEFAULT = torch.get_num_threads()


def cgroup_cpu_limit(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """CPUs allowed by a cgroup v2 quota (a Kubernetes CPU limit), rounded up; None if unlimited."""
    try:
        with open(path, encoding="ascii") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def default_engine_threads() -> int:
    """Intra-op threads for the engine when ``--num-threads`` is 0.

    torch's default (one per core), capped by the CPUs this process may use:
    its affinity mask and its cgroup quota. torch alone ignores the quota, so a
    pod limited to 4 CPUs on a 64-core node would run 64 threads on 4 CPUs.
    """
    limits = [_TORCH_DEFAULT]
    if hasattr(os, "sched_getaffinity"):
        limits.append(len(os.sched_getaffinity(0)))
    quota = cgroup_cpu_limit()
    if quota is not None:
        limits.append(quota)
    return max(1, min(limits))


def set_torch_threads(n: int) -> None:
    """The calling thread's intra-op thread count, for good (see the module docstring)."""
    torch.get_num_threads()  # torch's lazy per-thread initialisation, done now
    torch.set_num_threads(max(1, n))


def engine_threads(configured: int) -> int:
    """The engine core's thread count: ``--num-threads`` when > 0, else the default above."""
    return configured if configured > 0 else default_engine_threads()


def single_threaded_torch() -> None:
    """Make the calling thread run torch ops on itself only (no OpenMP team)."""
    set_torch_threads(1)


def run_in_fresh_thread(fn: Callable[[], T], name: str = "poolstream-load") -> T:
    """Run ``fn`` in a new thread and wait: its OpenMP team ends when the thread does."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["error"] = e

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def confine_other_threads(loop: asyncio.AbstractEventLoop, max_workers: int | None = None) -> ThreadPoolExecutor:
    """One torch thread for the event loop and its default executor's threads.

    Call it on the loop's thread after the engine started (the core thread has
    set its own count by then; ``AsyncEngine.start`` waits for that). Returns
    the executor installed as the loop's default (``asyncio.to_thread`` uses it).
    Threads started elsewhere later are not covered: they take torch's process
    default, which the core thread moves whenever it switches lanes.
    """
    single_threaded_torch()  # this thread, and the default for threads started from now on
    executor = ThreadPoolExecutor(
        max_workers=max_workers or min(32, (os.cpu_count() or 1) + 4),
        thread_name_prefix="poolstream-worker",
        initializer=single_threaded_torch,
    )
    loop.set_default_executor(executor)
    return executor
