"""The one kind of error the host tools raise: a problem the user can fix, in one line."""

from __future__ import annotations

from torchlab.backends import Hint


class HostError(Exception):
    """Raised where the problem is found: HostError(problem, fix) is the line
    `<problem>. Fix: <fix>`; without a fix (the output above says it), the problem alone."""

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(str(Hint(problem, fix)) if fix else problem)
