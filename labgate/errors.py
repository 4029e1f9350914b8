"""Errors the harness reports to a user, each with one clear message and an exit code."""

from __future__ import annotations


class LabgateError(Exception):
    """An error meant for the user: one line saying what is wrong and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


class ScenarioError(LabgateError):
    """A scenario file is malformed: names the file and the field path."""

    exit_code = 2


class UsageError(LabgateError):
    """A bad command-line flag or argument."""

    exit_code = 2


class ToolUnavailable(LabgateError):
    """A component binary cannot be had: the message carries the exact reason and the fix."""

    exit_code = 3


class StackError(LabgateError):
    """The stack could not be started (port in use, component unhealthy, ...)."""

    exit_code = 4
