"""Errors that name the offending input, so an operator can find and fix it."""

from __future__ import annotations


class ExportError(ValueError):
    """A landing file that cannot be read as any supported export.

    The message always starts with the file's name: in a partition of hundreds of
    files, an error that does not say which one is useless.
    """

    def __init__(self, source_file: str, problem: str) -> None:
        self.source_file = source_file
        self.problem = problem
        super().__init__(f"{source_file}: {problem}")
