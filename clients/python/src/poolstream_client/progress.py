"""Progress bars (tqdm) that draw only on a terminal.

``progress=None`` (the default everywhere) means: a bar when stderr is a TTY,
nothing in logs, pipes or CI; ``True``/``False`` force it on or off.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def wants_progress(progress: bool | None, stream: Any = None) -> bool:
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(total: int, progress: bool | None, unit: str = "prompt", desc: str | None = None) -> Any:
    """A tqdm bar over ``total`` on stderr, or None when no bar is wanted."""
    if not wants_progress(progress):
        return None
    from tqdm.auto import tqdm

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        size = os.terminal_size((0, 0))
    # A terminal that reports no size (0 x 0: a bare pty, some CI consoles) gets nothing from
    # tqdm (no columns for the bar, and no rows: bars beyond `nrows` are hidden): fix one.
    sizing = {"dynamic_ncols": True} if size.columns > 0 and size.lines > 0 else {"ncols": 80, "nrows": 24}
    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, leave=True, **sizing)
