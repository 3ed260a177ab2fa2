"""OpenMP settings for a serving process, applied before torch loads.

libgomp (torch's OpenMP runtime) reads its environment once, when torch is
first imported, so ``poolstream serve`` calls ``apply_openmp_defaults()``
before anything imports torch. An operator's own environment always wins.

``GOMP_SPINCOUNT``: how long an idle OpenMP worker spins before it sleeps.
libgomp's default, 300,000 spins (a few ms), is tuned for a process that
does nothing but compute: after every forward the engine's worker thread kept
a core busy for milliseconds, exactly when the event loop, gRPC's poller and
a local client needed the CPU to deliver the result. Measured on the 2-core
CPU (bench/bench_text.py's single-request latency): ~3 ms per request. 10,000
spins still bridge the microsecond gaps between the ops of one forward, and
64-concurrent throughput was unchanged or better.
"""

from __future__ import annotations

import os
import sys

OPENMP_DEFAULTS = {"GOMP_SPINCOUNT": "10000"}


def apply_openmp_defaults() -> bool:
    """Set the defaults not already in the environment; False if torch was loaded too early."""
    if "torch" in sys.modules:
        return False
    for key, value in OPENMP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return True
