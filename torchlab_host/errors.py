"""The one kind of error the host tools raise: a problem the user can fix, in one line."""

from __future__ import annotations

from torchlab.backends import Hint


class HostError(Exception):
    """A problem the user can fix; its message is the one line that says how."""


def fail(problem: str, fix: str) -> HostError:
    return HostError(str(Hint(problem, fix)))
