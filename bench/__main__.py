"""``python -m bench``: the benchmark CLI (the same as ``python scripts/benchmark.py``)."""

import sys

from bench.run import main

if __name__ == "__main__":
    sys.exit(main(command=("python", "-m", "bench")))
