"""Helpers the tests and benchmarks share: throwaway local servers (bentoml serve, PostgreSQL)."""
