"""The memory allocator the service's processes run with.

With glibc's malloc, a burst of large images leaves the gateway and the runners with grown, fragmented heaps,
and a lone request stays slower for the life of the process (README, Performance, "Latency after a burst").
TCMalloc (gperftools' ``libtcmalloc_minimal``, Debian/Ubuntu package ``libtcmalloc-minimal4``) does not drift. A
process picks its allocator when it starts, so whatever starts ``bentoml serve`` (``make serve``, the container,
the test and benchmark harness) adds ``preload_env()`` to its environment; the runners inherit it.
``SERVE_MALLOC=system`` keeps glibc's malloc.

``python -m serving.allocator`` prints the setting (``LD_PRELOAD=...``, or nothing) for a shell's ``env``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)
LIBRARY = "libtcmalloc_minimal.so.4"
SEARCH = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
CHOICES = ("tcmalloc", "system")
HINT = ("install TCMalloc (Debian/Ubuntu: apt-get install libtcmalloc-minimal4) and start with `make serve`, "
        "or set LD_PRELOAD to libtcmalloc_minimal.so.4; SERVE_MALLOC=system silences this")


def choice(environ: Mapping[str, str] = os.environ) -> str:
    """SERVE_MALLOC: ``tcmalloc`` (default) or ``system``."""
    value = environ.get("SERVE_MALLOC") or "tcmalloc"
    if value not in CHOICES:
        raise ValueError(f"SERVE_MALLOC={value!r} is not one of {', '.join(CHOICES)}; unset it for tcmalloc")
    return value


def find_tcmalloc(folders: Sequence[str] = SEARCH) -> str | None:
    """The first TCMalloc library found in ``folders``."""
    return next((str(Path(f) / LIBRARY) for f in folders if (Path(f) / LIBRARY).is_file()), None)


def preload_env(environ: Mapping[str, str] = os.environ, folders: Sequence[str] = SEARCH) -> dict[str, str]:
    """Environment to add when starting a server: TCMalloc in ``LD_PRELOAD``, ahead of what is there already.
    Empty when SERVE_MALLOC=system, when TCMalloc is already preloaded, or when it is not installed."""
    preload = environ.get("LD_PRELOAD", "")
    if choice(environ) == "system" or "libtcmalloc" in preload:
        return {}
    library = find_tcmalloc(folders)
    if library is None:
        return {}
    return {"LD_PRELOAD": " ".join(part for part in (library, preload) if part)}


def in_use(maps: Path = Path("/proc/self/maps")) -> str:
    """The allocator this process runs with: ``tcmalloc``, ``system``, or ``unknown`` (no /proc)."""
    try:
        text = maps.read_text()
    except OSError:
        return "unknown"
    return "tcmalloc" if "libtcmalloc" in text else "system"


def announce(environ: Mapping[str, str] = os.environ) -> str:
    """Log the allocator at start-up; a warning when TCMalloc was wanted and is not in use."""
    current = in_use()
    if current == "system" and choice(environ) == "tcmalloc":
        logger.warning("Memory allocator: glibc malloc; lone-request latency drifts up after bursts of large "
                       "images. To fix it, %s", HINT)
    else:
        logger.info("Memory allocator: %s", current)
    return current


if __name__ == "__main__":
    sys.stdout.write(" ".join(f"{key}={value}" for key, value in preload_env().items()) + "\n")
