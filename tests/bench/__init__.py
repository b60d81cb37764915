"""qemud's benchmarks: `python -m tests.bench` prints each figure as a plain line with its unit.

Benchmarks are functions in `tests.bench.__main__.BENCHES`; they print, they never assert (timings
depend on the machine), so nothing here is collected by pytest.
"""
