"""engine/errors.py helpers."""

from __future__ import annotations

import random

from poolstream.engine.errors import RETRY_JITTER, jittered_retry_delay


def test_retry_delays_are_jittered_upwards():
    """RetryInfo delays spread over [d, 1.5 d), so clients refused together do not
    all come back together."""
    rng = random.Random(7)
    delays = [jittered_retry_delay(0.2, rng) for _ in range(200)]
    assert all(0.2 <= d < 0.2 * (1 + RETRY_JITTER) for d in delays)
    assert max(delays) - min(delays) > 0.05  # spread, not one value
