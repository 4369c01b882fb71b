"""Benchmarks of the labelops code location; docs/benchmarks.md has the results.

The ``pipelines`` package is imported first, as a run worker imports it before numpy or Arrow: its allocator
settings (pipelines.allocator) take effect only before their threads start.
"""

import pipelines  # noqa: F401
