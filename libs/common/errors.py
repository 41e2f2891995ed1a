"""The one error hierarchy shared by every Fulcrum service.

Domain errors carry an HTTP status, a user message (shown to API clients as Octavia's
``faultstring``) and an operator detail (logged, never shown). Infrastructure errors are raised
only by adapters, always ``from`` the library exception they translate.
"""

from __future__ import annotations


class FulcrumError(Exception):
    """Root of every error Fulcrum raises on purpose."""


class DomainError(FulcrumError):
    """A rule of the domain refused a command; nothing was written."""

    code: str = "domain_error"
    http_status: int = 400

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or message


class ValidationFailed(DomainError):
    """Input breaks a rule (Octavia's ValidationException, 400)."""

    code = "validation_failed"
    http_status = 400


class NotFound(DomainError):
    """The resource does not exist, is DELETED, or is hidden from the caller (404)."""

    code = "not_found"
    http_status = 404

    @classmethod
    def resource(cls, kind: str, resource_id: str) -> NotFound:
        return cls(f"{kind} {resource_id} not found.")


class InvalidState(DomainError):
    """The resource's provisioning status forbids the change (Octavia's 409 immutable)."""

    code = "invalid_state"
    http_status = 409


class Conflict(DomainError):
    """The change collides with existing state: duplicates, objects in use (409)."""

    code = "conflict"
    http_status = 409


class Unauthorized(DomainError):
    """No valid credentials: a missing, forged or expired token, a wrong password (401)."""

    code = "unauthorized"
    http_status = 401


class Forbidden(DomainError):
    """Policy or quota refuses the request (403)."""

    code = "forbidden"
    http_status = 403


class NotImplementedByProvider(DomainError):
    """The amphora provider cannot do this (Octavia's 501)."""

    code = "not_implemented"
    http_status = 501


class ConcurrencyError(FulcrumError):
    """Another writer appended to the stream at the expected version first."""

    def __init__(self, stream_id: str, expected_version: int) -> None:
        super().__init__(f"stream {stream_id} moved past version {expected_version}")
        self.stream_id = stream_id
        self.expected_version = expected_version


class ConfigurationError(FulcrumError, ValueError):
    """Settings a service or agent cannot run with; it refuses to start and says why."""


class InfrastructureError(FulcrumError):
    """A server or process Fulcrum depends on failed; raised only in adapters."""


class TransientError(InfrastructureError):
    """A failure worth retrying later (consumers nak with delay)."""
