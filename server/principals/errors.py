"""Errors of the principals layer; the HTTP pipeline turns them into answers (http-api.md §4.5, §5).

Like `pushjobs.protocol.errors.ChefAuthError`, a refusal carries the status and the message
the server answers with, so this layer needs nothing of the HTTP layer.
"""

from __future__ import annotations


class PrincipalRefusal(Exception):
    """A request's principal is refused: `status` and `message` are the HTTP answer."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AuthenticationFailed(PrincipalRefusal):
    """Authentication (pipeline step 7) failed: 401 (unknown principal, no key verifies), or
    403 (not associated with the organization).

    The 401s carry the `WWW-Authenticate` challenge (http-api.md §4.5); the 403 does not.
    """

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message, status=status)

    @property
    def challenge(self) -> bool:
        """True when the answer carries `WWW-Authenticate`."""
        return self.status == 401


class AccessDenied(PrincipalRefusal):
    """Authorization (pipeline step 8) refused the authenticated requestor: 403."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=403)


class PrincipalBackendUnavailable(Exception):
    """The principal backend cannot be reached; the pipeline answers 502 with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
