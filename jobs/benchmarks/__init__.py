"""Benchmarks, each a script (``python jobs/benchmarks/<name>.py``); ``jobs/benchmark.py`` runs them all."""
