"""labelops: the pure domain library behind the Dagster assets.

Nothing in this package imports Dagster, so every rule about labels, geometry and
quality can be tested and reused without an orchestrator.
"""
