"""The error every conformance check raises: which plugin, which check, what went wrong."""

from __future__ import annotations

from rlops_plugin.errors import RLOpsError


class ConformanceError(RLOpsError):
    """A plugin (trainer, environment, monitor) breaks the contract rlops relies on.

    ``subject`` names the plugin (``"trainer 'bc'"``), ``check`` the contract clause that failed
    (``"improvement"``, ``"determinism"``, ...); the message says what was seen.
    """

    def __init__(self, subject: str, check: str, message: str) -> None:
        super().__init__(f"{subject} fails the {check!r} check: {message}")
        self.subject = subject
        self.check = check
        self.detail = message


def fail(subject: str, check: str, message: str, cause: BaseException | None = None) -> ConformanceError:
    """A :class:`ConformanceError` (with ``cause`` chained) for ``raise fail(...)``."""
    err = ConformanceError(subject, check, message if cause is None else f"{message}: {type(cause).__name__}: {cause}")
    err.__cause__ = cause
    return err
