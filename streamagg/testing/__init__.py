"""Tools for tests, demos and benchmarks, not used by a run: the sample-day generator."""
