"""The labelops code location (``pipelines.definitions``), its jobs, schedules and sensors."""

from pipelines import allocator  # noqa: F401  # first: the allocator's settings precede numpy's and Arrow's threads
