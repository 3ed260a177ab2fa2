"""Stand-in for terratorch's package ``__init__`` (see ../README.md): the rest of the
package is the installed wheel, found by extending this package's path."""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
for _entry in sys.path:
    _candidate = os.path.join(_entry, "terratorch")
    if os.path.isdir(os.path.join(_candidate, "vllm")) and os.path.abspath(_candidate) != _here:
        __path__.append(_candidate)  # type: ignore[name-defined]  # noqa: F821
        break
else:
    raise ImportError("the terratorch wheel is not on sys.path (make setup installs it into .venv/vllm-plugins)")
