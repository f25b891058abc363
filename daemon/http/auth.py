"""Who is calling: the bearer-token tenant and the admin check, shared by every router.

With no ``[[tenants]]`` configured, authentication is off (the daemon then only binds
loopback, see ``server.check_bind``): every request is tenant ``default`` and may act as
admin.  With tenants, every endpoint needs ``Authorization: Bearer <token>`` (401
otherwise) and the write endpoints need a tenant with ``admin = true`` (403 otherwise).
"""

# No `from __future__ import annotations`: FastAPI reads the dependency signatures.
import hmac
from typing import Annotated, NamedTuple

from fastapi import Depends, HTTPException, Request

from adaptd.daemon.config import Settings
from adaptd.daemon.config import Tenant as TenantConfig

#: The tenant of every request when no tenants are configured.
DEFAULT_TENANT = "default"


class Identity(NamedTuple):
    """Who is calling: the tenant name and whether it may act as admin."""

    tenant: str
    admin: bool


class Auth:
    """Bearer-token resolution for ``settings.tenants``.

    ``Auth(settings).Tenant`` and ``.Admin`` are ``Annotated[str, Depends(...)]`` types
    for endpoint parameters: the caller's tenant name, the second one only for admins.
    ``.Identity`` gives any caller its ``Identity`` (tenant, admin).
    """

    def __init__(self, settings: Settings) -> None:
        self._tokens: list[tuple[bytes, TenantConfig]] = [
            (token.encode(), tenant) for tenant in settings.tenants for token in tenant.tokens
        ]
        self.Tenant = Annotated[str, Depends(self.tenant)]
        self.Admin = Annotated[str, Depends(self.admin)]
        self.Identity = Annotated[Identity, Depends(self.identity)]

    @property
    def enabled(self) -> bool:
        """True when tenants are configured (tokens required)."""
        return bool(self._tokens)

    def caller(self, request: Request) -> TenantConfig | None:
        """The configured tenant of the request's bearer token; None when auth is off.

        Every configured token is compared in constant time, whichever matches.

        Raises:
            HTTPException: 401, the token is missing or unknown.
        """
        if not self._tokens:
            return None
        header = request.headers.get("authorization", "")
        if not header:
            raise HTTPException(
                401, "missing bearer token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, token = header.partition(" ")
        given = token.strip().encode()
        found: TenantConfig | None = None
        for known, tenant in self._tokens:
            if hmac.compare_digest(known, given) and found is None:
                found = tenant
        if scheme.lower() != "bearer" or not given or found is None:
            raise HTTPException(
                401, "unknown bearer token: check ADAPTD_TOKEN / --token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found

    def tenant(self, request: Request) -> str:
        """The caller's tenant name (``default`` when no tenants are configured).

        Also kept as ``request.state.tenant``, so error handlers can count per tenant.
        """
        caller = self.caller(request)
        request.state.tenant = DEFAULT_TENANT if caller is None else caller.name
        return request.state.tenant

    def identity(self, request: Request) -> "Identity":
        """The caller's tenant and whether it is an admin (always, when auth is off).

        For endpoints any tenant may call that show admins more (``/v1/stats``).

        Raises:
            HTTPException: 401 as ``caller``.
        """
        caller = self.caller(request)
        if caller is None:
            request.state.tenant = DEFAULT_TENANT
            return Identity(DEFAULT_TENANT, True)
        request.state.tenant = caller.name
        return Identity(caller.name, caller.admin)

    def admin(self, request: Request) -> str:
        """The caller's tenant name if it may use the admin endpoints.

        Raises:
            HTTPException: 401 as ``caller``; 403, the tenant is not an admin.
        """
        caller = self.caller(request)
        request.state.tenant = DEFAULT_TENANT if caller is None else caller.name
        if caller is None:
            return DEFAULT_TENANT
        if not caller.admin:
            raise HTTPException(
                403, f"tenant {caller.name!r} is not an admin: use the token of a tenant with admin = true",
            )
        return caller.name
