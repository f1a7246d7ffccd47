"""Benchmarks of the service against the naive design, LitServe and the bare models (``python -m bench``).

Dev tooling: not installed with the project and not part of the Bento. Run from the repository root.
"""
