"""The exceptions the package raises: each carries mmflow's own message and exit code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class MmflowError(Exception):
    """mmflow refused or failed; ``str(error)`` is its message (naming the file, stage, key,
    row or video at fault).

    Attributes:
        message: mmflow's message.
        exit_code: the binary's exit code (1: a stage or the run failed; 2: bad config or usage).
        stderr: everything the binary printed on stderr.
    """

    def __init__(self, message: str, *, exit_code: int, stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.stderr = stderr


class ConfigError(MmflowError):
    """The pipeline file, an override or an argument is wrong (exit code 2): nothing ran."""


class StageFailedError(MmflowError):
    """A stage failed (exit code 1). The stages that did not depend on it may have run.

    Attributes:
        failed: stage id → its error, for every stage that failed.
        document: the run's (or sweep's) JSON document, as ``mmflow … --json`` printed it.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int,
        stderr: str = "",
        failed: Mapping[str, str] | None = None,
        document: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, exit_code=exit_code, stderr=stderr)
        self.failed = dict(failed or {})
        self.document = dict(document or {})


class TableChangedError(MmflowError):
    """A run's output is not the file its stage wrote (its size or content hash differs from
    the lock's), so it is not read (exit code 1)."""
