"""The one error type for bad input files."""

from __future__ import annotations

from pathlib import Path


class BadInput(Exception):
    """A file that cannot be used, with what was expected.

    Attributes:
        path: The offending file (or folder).
        problem: What is wrong with it and what was expected.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
