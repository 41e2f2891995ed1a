"""Keystone v3's read API over the identity file: users, projects, roles, domains, role
assignments, and the caller's own projects and catalog (``/v3/auth/projects``,
``/v3/auth/catalog``).

Bodies and texts are Keystone's (``links.self``, ``"Could not find user: <id>."``, 403
``"You are not authorized to perform the requested action: identity:<action>."``). RBAC is
Keystone's default policy for project-scoped tokens: an admin reads everything; anyone else
reads itself, its own projects (``/v3/users/<self>/projects``, ``/v3/auth/projects``), the
project and the domain its token is scoped to, and nothing else. Roles are names (a role's id
is its name, as in the tokens). Every handler answers 401 without a valid token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from aiohttp import web

from services.api.auth.identity import Domain, IdentityConfig, Project, User
from services.api.auth.keystone import KeystoneApi, unauthorized
from services.api.domain.policy import RequestContext
from services.api.http.errors import keystone_error

Body = dict[str, Any]
# Roles every deployment knows (Keystone's bootstrap roles), beside those granted in the file.
DEFAULT_ROLES: Final = ("admin", "member", "reader")


def _forbidden(action: str) -> web.Response:
    message = f"You are not authorized to perform the requested action: identity:{action}."
    return keystone_error(403, "Forbidden", message)


def _not_found(kind: str, wanted: str) -> web.Response:
    return keystone_error(404, "Not Found", f"Could not find {kind}: {wanted}.")


async def _caller(keystone: KeystoneApi, request: web.Request) -> RequestContext | None:
    return await keystone.context_for_token(request.headers.get("X-Auth-Token", ""))


def _collection(
    keystone: KeystoneApi, request: web.Request, key: str, bodies: Iterable[Body]
) -> web.Response:
    self_url = f"{keystone.base_url(request)}{request.path}"
    links = {"self": self_url, "previous": None, "next": None}
    return web.json_response({key: list(bodies), "links": links})


def _filtered(items: Iterable[Any], request: web.Request, *names: str) -> list[Any]:
    """Items whose attributes equal every given query filter among ``names``."""
    wanted = {n: request.query[n] for n in names if n in request.query}
    return [i for i in items if all(str(getattr(i, n)) == v for n, v in wanted.items())]


def _user_body(keystone: KeystoneApi, request: web.Request, user: User) -> Body:
    return {
        "id": user.id,
        "name": user.name,
        "domain_id": user.domain_id,
        "enabled": True,
        "password_expires_at": None,
        "options": {},
        "links": {"self": f"{keystone.base_url(request)}/v3/users/{user.id}"},
    }


def project_body(keystone: KeystoneApi, request: web.Request, project: Project) -> Body:
    return {
        "id": project.id,
        "name": project.name,
        "domain_id": project.domain_id,
        "description": project.description,
        "enabled": True,
        "is_domain": False,
        "parent_id": project.domain_id,
        "tags": [],
        "options": {},
        "links": {"self": f"{keystone.base_url(request)}/v3/projects/{project.id}"},
    }


def _role_body(keystone: KeystoneApi, request: web.Request, role: str) -> Body:
    return {
        "id": role,
        "name": role,
        "domain_id": None,
        "description": None,
        "options": {},
        "links": {"self": f"{keystone.base_url(request)}/v3/roles/{role}"},
    }


def _domain_body(keystone: KeystoneApi, request: web.Request, domain: Domain) -> Body:
    return {
        "id": domain.id,
        "name": domain.name,
        "description": "",
        "enabled": True,
        "tags": [],
        "options": {},
        "links": {"self": f"{keystone.base_url(request)}/v3/domains/{domain.id}"},
    }


def known_roles(identity: IdentityConfig) -> list[str]:
    """The default roles, then every other role granted in ``identity``, without repeats."""
    granted = (r for u in identity.users for roles in u.roles.values() for r in roles)
    return list(dict.fromkeys((*DEFAULT_ROLES, *granted)))


def _projects_of(identity: IdentityConfig, user: User) -> list[Project]:
    return [p for p in identity.projects if user.roles.get(p.id)]


Handler = Callable[[KeystoneApi, web.Request], Awaitable[web.Response]]
# What an admin-only list shows: the identity's items (filtered by the query) -> bodies.
Lister = Callable[[KeystoneApi, web.Request], list[Body]]
# One item's body (or a collection below it), or None: not found. ``wanted``: the path's id.
Finder = Callable[[KeystoneApi, web.Request, str], Body | list[Body] | None]
# Whether a non-admin caller may read ``wanted`` (Keystone's "or it is yours" rules).
Owner = Callable[[KeystoneApi, RequestContext, str], bool]


def _admin_list(action: str, key: str, lister: Lister) -> Handler:
    """``GET /v3/<key>``: 401 without a token, 403 unless admin, else the collection."""

    async def handle(keystone: KeystoneApi, request: web.Request) -> web.Response:
        ctx = await _caller(keystone, request)
        if ctx is None:
            return unauthorized()
        if not ctx.is_admin:
            return _forbidden(action)
        return _collection(keystone, request, key, lister(keystone, request))

    return handle


def _member(action: str, kind: str, path_key: str, finder: Finder, owner: Owner) -> Handler:
    """``GET /v3/<kind>s/{id}`` (or a collection below it): 401 without a token, 403 unless
    admin or ``owner`` allows, 404 when ``finder`` finds nothing, else ``{kind: body}`` (or
    the collection under ``kind``)."""

    async def handle(keystone: KeystoneApi, request: web.Request) -> web.Response:
        ctx = await _caller(keystone, request)
        if ctx is None:
            return unauthorized()
        wanted = request.match_info[path_key]
        if not ctx.is_admin and not owner(keystone, ctx, wanted):
            return _forbidden(action)
        body = finder(keystone, request, wanted)
        if body is None:
            return _not_found(path_key, wanted)
        if isinstance(body, list):
            return _collection(keystone, request, kind, body)
        return web.json_response({kind: body})

    return handle


def _nobody(keystone: KeystoneApi, ctx: RequestContext, wanted: str) -> bool:
    return False


def _is_self(keystone: KeystoneApi, ctx: RequestContext, wanted: str) -> bool:
    return ctx.user_id == wanted


def _is_scope(keystone: KeystoneApi, ctx: RequestContext, wanted: str) -> bool:
    return ctx.project_id == wanted


def _is_scope_domain(keystone: KeystoneApi, ctx: RequestContext, wanted: str) -> bool:
    project = keystone.identity.project(id_=ctx.project_id) if ctx.project_id else None
    return project is not None and project.domain_id == wanted


def _users(keystone: KeystoneApi, request: web.Request) -> list[Body]:
    users = _filtered(keystone.identity.users, request, "name", "domain_id")
    return [_user_body(keystone, request, u) for u in users]


def _projects(keystone: KeystoneApi, request: web.Request) -> list[Body]:
    projects = _filtered(keystone.identity.projects, request, "name", "domain_id")
    return [project_body(keystone, request, p) for p in projects]


def _roles(keystone: KeystoneApi, request: web.Request) -> list[Body]:
    name = request.query.get("name")
    roles = [r for r in known_roles(keystone.identity) if name in (None, r)]
    return [_role_body(keystone, request, r) for r in roles]


def _domains(keystone: KeystoneApi, request: web.Request) -> list[Body]:
    domains = _filtered(keystone.identity.domains, request, "name")
    return [_domain_body(keystone, request, d) for d in domains]


def _assignments(keystone: KeystoneApi, request: web.Request) -> list[Body]:
    """Every (user, project, role) grant, filtered by ``user.id``, ``scope.project.id`` and
    ``role.id``; ``include_names`` adds the names (as ``openstack role assignment list
    --names`` asks)."""
    identity = keystone.identity
    base = keystone.base_url(request)
    query = request.query
    names = query.get("include_names", "false").lower() in ("1", "true", "")
    found: list[Body] = []
    for user in identity.users:
        for project_id, roles in user.roles.items():
            project = identity.project(id_=project_id)
            for role in roles:
                wanted = {"user.id": user.id, "scope.project.id": project_id, "role.id": role}
                if any(query.get(k, v) != v for k, v in wanted.items()):
                    continue
                body: Body = {
                    "role": {"id": role},
                    "user": {"id": user.id},
                    "scope": {"project": {"id": project_id}},
                    "links": {
                        "assignment": f"{base}/v3/projects/{project_id}/users/{user.id}"
                        f"/roles/{role}"
                    },
                }
                if names:
                    body["role"]["name"] = role
                    body["user"].update(
                        name=user.name, domain=_domain_ref(identity, user.domain_id)
                    )
                    if project is not None:
                        body["scope"]["project"].update(
                            name=project.name, domain=_domain_ref(identity, project.domain_id)
                        )
                found.append(body)
    return found


def _domain_ref(identity: IdentityConfig, domain_id: str) -> Body:
    domain = identity.domain(domain_id)
    return {"id": domain_id, "name": domain.name if domain else domain_id}


def _user(keystone: KeystoneApi, request: web.Request, wanted: str) -> Body | None:
    user = keystone.identity.user(id_=wanted)
    return _user_body(keystone, request, user) if user else None


def _user_projects(keystone: KeystoneApi, request: web.Request, wanted: str) -> list[Body] | None:
    user = keystone.identity.user(id_=wanted)
    if user is None:
        return None
    return [project_body(keystone, request, p) for p in _projects_of(keystone.identity, user)]


def _project(keystone: KeystoneApi, request: web.Request, wanted: str) -> Body | None:
    project = keystone.identity.project(id_=wanted)
    return project_body(keystone, request, project) if project else None


def _role(keystone: KeystoneApi, request: web.Request, wanted: str) -> Body | None:
    known = wanted in known_roles(keystone.identity)
    return _role_body(keystone, request, wanted) if known else None


def _domain(keystone: KeystoneApi, request: web.Request, wanted: str) -> Body | None:
    domain = keystone.identity.domain(wanted)
    return _domain_body(keystone, request, domain) if domain else None


list_users = _admin_list("list_users", "users", _users)
list_role_assignments = _admin_list("list_role_assignments", "role_assignments", _assignments)
show_user = _member("get_user", "user", "user", _user, _is_self)
list_user_projects = _member("list_user_projects", "projects", "user", _user_projects, _is_self)
list_projects = _admin_list("list_projects", "projects", _projects)
show_project = _member("get_project", "project", "project", _project, _is_scope)
list_roles = _admin_list("list_roles", "roles", _roles)
show_role = _member("get_role", "role", "role", _role, _nobody)
list_domains = _admin_list("list_domains", "domains", _domains)
show_domain = _member("get_domain", "domain", "domain", _domain, _is_scope_domain)


async def auth_projects(keystone: KeystoneApi, request: web.Request) -> web.Response:
    """The projects the token's user has a role on (any valid token, scoped or not)."""
    ctx = await _caller(keystone, request)
    if ctx is None:
        return unauthorized()
    user = keystone.identity.user(id_=ctx.user_id) if ctx.user_id else None
    projects = _projects_of(keystone.identity, user) if user else []
    bodies = (project_body(keystone, request, p) for p in projects)
    return _collection(keystone, request, "projects", bodies)


async def auth_domains(keystone: KeystoneApi, request: web.Request) -> web.Response:
    """Domains the user has a role on: none (grants are on projects only)."""
    if await _caller(keystone, request) is None:
        return unauthorized()
    return _collection(keystone, request, "domains", [])


async def auth_catalog(keystone: KeystoneApi, request: web.Request) -> web.Response:
    ctx = await _caller(keystone, request)
    if ctx is None:
        return unauthorized()
    if ctx.project_id is None:
        message = "A project-scoped token is required to produce a service catalog."
        return keystone_error(403, "Forbidden", message)
    self_url = f"{keystone.base_url(request)}{request.path}"
    return web.json_response({"catalog": keystone.catalog(request), "links": {"self": self_url}})


# (path, handler, summary): every read route of the directory, for the router.
ROUTES: Final[tuple[tuple[str, Handler, str], ...]] = (
    ("/v3/auth/projects", auth_projects, "Projects the token's user may scope to"),
    ("/v3/auth/domains", auth_domains, "Domains the token's user may scope to"),
    ("/v3/auth/catalog", auth_catalog, "The service catalog of the token"),
    ("/v3/users", list_users, "Users (admin)"),
    ("/v3/users/{user}", show_user, "One user (admin, or the user itself)"),
    ("/v3/users/{user}/projects", list_user_projects, "A user's projects"),
    ("/v3/projects", list_projects, "Projects (admin)"),
    ("/v3/projects/{project}", show_project, "One project (admin, or its members)"),
    ("/v3/roles", list_roles, "Roles (admin)"),
    ("/v3/roles/{role}", show_role, "One role (admin)"),
    ("/v3/domains", list_domains, "Domains (admin)"),
    ("/v3/role_assignments", list_role_assignments, "Role assignments (admin)"),
    ("/v3/domains/{domain}", show_domain, "One domain (admin, or its projects' members)"),
)
