"""The Keystone v3 subset on the API's port: version, password/token auth and validation.

Answers with Keystone's shapes (``X-Subject-Token``, ``expires_at``, roles, catalog) so that
keystoneauth, the ``openstack`` CLI and openstacksdk work unmodified. Errors use Keystone's
body ``{"error": {"code", "title", "message"}}``. Passwords and tokens are never logged.

Tokens are Fernet tokens (``tokens``); ``DELETE /v3/auth/tokens`` revokes one in the shared
revocation list, which every validation consults. Password attempts go through the
``LoginThrottle`` (429 with ``Retry-After`` once a user or an address failed too often, counted
across every replica).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from libs.common.errors import ConfigurationError
from services.api.auth.identity import (
    IdentityConfig,
    IdentityFile,
    Project,
    User,
    verify_password,
)
from services.api.auth.throttle import LoginThrottle
from services.api.auth.tokens import InvalidToken, RevocationList, TokenClaims, TokenSigner
from services.api.domain.policy import RequestContext
from services.api.http.errors import keystone_error

UNAUTHORIZED_MESSAGE: Final = "The request you have made requires authentication."


def unauthorized(message: str = UNAUTHORIZED_MESSAGE) -> web.Response:
    return keystone_error(401, "Unauthorized", message)


def too_many_attempts(retry_after: int) -> web.Response:
    """Keystone's error body with 429 and ``Retry-After`` (seconds)."""
    response = keystone_error(
        429,
        "Too Many Requests",
        "Too many failed authentication attempts for this user or from this address; "
        f"retry in {retry_after} seconds.",
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


@dataclass(frozen=True)
class CatalogSettings:
    region: str = "RegionOne"
    # Extra catalog entries (type -> path under the public URL), e.g. key-manager.
    extra_services: tuple[tuple[str, str, str], ...] = ()


class KeystoneApi:
    """Handlers of ``/v3`` plus ``context_for_token`` used by the auth middleware; the read
    API (users, projects, roles, domains) is in ``directory``."""

    def __init__(
        self,
        identity: IdentityConfig | IdentityFile,
        signer: TokenSigner,
        catalog: CatalogSettings,
        public_url: str | None = None,
        admin_token: str | None = None,
        admin_project_id: str | None = None,
    ) -> None:
        self._identity = identity
        self.signer = signer
        # Set by the app once Postgres is open (every replica shares them).
        self.revocations: RevocationList | None = None
        self.throttle: LoginThrottle | None = None
        self.catalog_settings = catalog
        self.public_url = public_url
        self.admin_token = admin_token
        self.admin_context = RequestContext(
            project_id=admin_project_id,
            roles=frozenset({"admin", "member", "reader"}),
            is_admin=True,
        )

    @property
    def identity(self) -> IdentityConfig:
        """The identity configuration now (the file's latest valid version)."""
        if isinstance(self._identity, IdentityFile):
            return self._identity.current()
        return self._identity

    def base_url(self, request: web.Request) -> str:
        return (self.public_url or f"{request.scheme}://{request.host}").rstrip("/")

    async def version(self, request: web.Request) -> web.Response:
        base = self.base_url(request)
        return web.json_response(
            {
                "version": {
                    "id": "v3.14",
                    "status": "stable",
                    "updated": "2020-04-07T00:00:00Z",
                    "links": [{"rel": "self", "href": f"{base}/v3/"}],
                    "media-types": [
                        {
                            "base": "application/json",
                            "type": "application/vnd.openstack.identity-v3+json",
                        }
                    ],
                }
            }
        )

    # --- tokens ---------------------------------------------------------------------------

    async def issue_token(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            auth = body["auth"]
            methods = auth["identity"]["methods"]
        except (ValueError, KeyError, TypeError):
            return keystone_error(400, "Bad Request", "Expecting to find auth.identity.methods")
        parent_audit_id: str | None = None
        if "password" in methods:
            user, refusal = await self._password_user(
                auth["identity"].get("password"), request.remote or ""
            )
            if refusal is not None:
                return refusal
        elif "token" in methods:
            parent = await self._token_claims(auth["identity"].get("token"))
            user = self.identity.user(id_=parent.user_id) if parent else None
            parent_audit_id = parent.audit_ids[0] if parent and parent.audit_ids else None
        else:
            return keystone_error(400, "Bad Request", "Only the password and token methods")
        if user is None:
            return unauthorized()
        project, error = self._scope(auth.get("scope"), user)
        if error is not None:
            return error
        roles = tuple(user.roles.get(project.id, ())) if project else ()
        claims = self.signer.new_claims(
            user_id=user.id,
            user_name=user.name,
            domain_id=user.domain_id,
            project_id=project.id if project else None,
            project_name=project.name if project else None,
            roles=roles,
            parent_audit_id=parent_audit_id,
        )
        token = self.signer.issue(claims)
        payload = self._token_body(request, claims, methods)
        return web.json_response(payload, status=201, headers={"X-Subject-Token": token})

    async def _password_user(
        self, password: Any, address: str
    ) -> tuple[User | None, web.Response | None]:
        """The user the password method names, if the password matches; or the 429 of a
        throttled user or address."""
        if not isinstance(password, dict) or not isinstance(password.get("user"), dict):
            return None, None
        if self.throttle is None:
            raise ConfigurationError("the login failure counts are not open yet")
        spec = password["user"]
        domain_id = self._domain_id(spec.get("domain"))
        attempt = f"id:{spec.get('id')}" if spec.get("id") else f"{domain_id}/{spec.get('name')}"
        wait = await self.throttle.retry_after(attempt, address)
        if wait:
            return None, too_many_attempts(wait)
        user = self.identity.user(id_=spec.get("id"), name=spec.get("name"), domain_id=domain_id)
        secret = spec.get("password")
        if user is None or not isinstance(secret, str):
            await self.throttle.failed(attempt, address)
            return None, None
        if not verify_password(secret, user.password_hash):
            await self.throttle.failed(attempt, address)
            return None, None
        await self.throttle.succeeded(attempt)
        return user, None

    async def _token_claims(self, token: Any) -> TokenClaims | None:
        if not isinstance(token, dict) or not isinstance(token.get("id"), str):
            return None
        try:
            return await self.claims_of(token["id"])
        except InvalidToken:
            return None

    async def claims_of(self, token: str) -> TokenClaims:
        """The claims of a valid, unexpired, unrevoked token; raises InvalidToken."""
        claims = self.signer.validate(token)
        if self.revocations is None:
            raise ConfigurationError("the token revocation list is not open yet")
        if await self.revocations.any_revoked(claims.audit_ids):
            raise InvalidToken("token revoked")
        return claims

    def _domain_id(self, spec: Any) -> str | None:
        if not isinstance(spec, dict):
            return None
        domain = self.identity.domain(spec.get("id"), spec.get("name"))
        return domain.id if domain else "\x00no-such-domain"

    def _scope(self, scope: Any, user: User) -> tuple[Project | None, web.Response | None]:
        if not scope:
            return None, None
        spec = scope.get("project") if isinstance(scope, dict) else None
        if not isinstance(spec, dict):
            return None, keystone_error(400, "Bad Request", "Only project scope is supported")
        project = self.identity.project(
            id_=spec.get("id"), name=spec.get("name"), domain_id=self._domain_id(spec.get("domain"))
        )
        if project is None or not user.roles.get(project.id):
            return None, unauthorized(
                "User has no access to project" if project else "Could not find project"
            )
        return project, None

    def _token_body(
        self, request: web.Request, claims: TokenClaims, methods: list[str]
    ) -> dict[str, Any]:
        domain = self.identity.domain(claims.domain_id)
        domain_ref = {"id": claims.domain_id, "name": domain.name if domain else claims.domain_id}
        token: dict[str, Any] = {
            "methods": methods,
            "user": {
                "id": claims.user_id,
                "name": claims.user_name,
                "domain": domain_ref,
                "password_expires_at": None,
            },
            "audit_ids": list(claims.audit_ids),
            "issued_at": _time(claims.issued_at),
            "expires_at": _time(claims.expires_at),
            "is_domain": False,
        }
        if claims.project_id is not None:
            project = self.identity.project(id_=claims.project_id)
            pdomain = self.identity.domain(project.domain_id) if project else None
            token["project"] = {
                "id": claims.project_id,
                "name": claims.project_name,
                "domain": {"id": pdomain.id, "name": pdomain.name} if pdomain else domain_ref,
            }
            token["roles"] = [{"id": role, "name": role} for role in claims.roles]
            token["catalog"] = self.catalog(request)
        return {"token": token}

    def catalog(self, request: web.Request) -> list[dict[str, Any]]:
        base = self.base_url(request)
        region = self.catalog_settings.region
        services = [
            ("load-balancer", "octavia", base),
            ("network", "neutron", base),
            ("identity", "keystone", f"{base}/v3"),
            *((t, n, f"{base}{p}") for t, n, p in self.catalog_settings.extra_services),
        ]
        return [
            {
                "type": kind,
                "name": name,
                "id": name,
                "endpoints": [
                    {
                        "id": f"{name}-{interface}",
                        "interface": interface,
                        "region": region,
                        "region_id": region,
                        "url": url,
                    }
                    for interface in ("public", "internal", "admin")
                ],
            }
            for kind, name, url in services
        ]

    async def validate_token(self, request: web.Request) -> web.Response:
        if await self.context_for_token(request.headers.get("X-Auth-Token", "")) is None:
            return unauthorized()
        subject = request.headers.get("X-Subject-Token", "")
        try:
            claims = await self.claims_of(subject)
        except InvalidToken as exc:
            return keystone_error(404, "Not Found", f"Could not find token: {exc}")
        if request.method == "HEAD":
            return web.Response(status=200)
        return web.json_response(self._token_body(request, claims, ["password"]))

    async def revoke_token(self, request: web.Request) -> web.Response:
        """Keystone's ``DELETE /v3/auth/tokens``: the caller revokes its own token (an admin,
        any); 204, and from then on every replica refuses it and the tokens made from it."""
        caller = await self.context_for_token(request.headers.get("X-Auth-Token", ""))
        if caller is None:
            return unauthorized()
        try:
            claims = await self.claims_of(request.headers.get("X-Subject-Token", ""))
        except InvalidToken as exc:
            return keystone_error(404, "Not Found", f"Could not find token: {exc}")
        if not caller.is_admin and caller.user_id != claims.user_id:
            message = (
                "You are not authorized to perform the requested action: identity:revoke_token."
            )
            return keystone_error(403, "Forbidden", message)
        if self.revocations is None or not claims.audit_ids:
            raise ConfigurationError("the token revocation list is not open yet")
        await self.revocations.revoke(claims.audit_ids[0], claims.expires_at)
        return web.Response(status=204)

    async def context_for_token(self, token: str) -> RequestContext | None:
        """The caller behind a Keystone token (or the operator's admin token), else None."""
        if self.admin_token and hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return self.admin_context
        try:
            claims = await self.claims_of(token)
        except InvalidToken:
            return None
        roles = frozenset(claims.roles)
        return RequestContext(
            project_id=claims.project_id,
            user_id=claims.user_id,
            roles=roles,
            is_admin="admin" in roles,
        )
