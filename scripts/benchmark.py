"""``python scripts/benchmark.py``: the documented benchmark command, kept for the Makefile and the recorded runs.

The benchmarks live in the ``bench`` package (bench/run.py); this runs its CLI, as ``python -m bench`` does.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
