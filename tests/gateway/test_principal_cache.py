"""auth.PrincipalCache: a verified token is trusted briefly; a revocation still bites at once."""

from __future__ import annotations

from slipway.services.gateway.core import store
from slipway.services.gateway.http.auth import Principal, PrincipalCache
from tests.gateway.conftest import Stack


def _principal() -> Principal:
    user = store.User("u", "a@example.test", None, False, None, "t", "t")
    token = store.Token("k", "u", "", [], None, "t", "t", None, None)
    return Principal(user, token)


def test_an_entry_lives_its_ttl_only() -> None:
    """A cached principal is served until its TTL ends, then read again."""
    cache = PrincipalCache(ttl=10.0)
    cache.put("h", _principal(), cache.generation, now=100.0)
    assert cache.get("h", 109.9) is not None
    assert cache.get("h", 110.0) is None


def test_a_lookup_that_raced_an_invalidation_is_not_kept() -> None:
    """What was read before a revocation committed is not stored after it."""
    cache = PrincipalCache()
    generation = cache.generation  # a lookup starts, reads the old row...
    cache.clear()  # ...a revocation commits meanwhile...
    cache.put("h", _principal(), generation, now=0.0)  # ...and its answer comes back
    assert cache.get("h", 0.0) is None


async def test_a_token_in_use_is_refused_at_once_after_revocation(stack: Stack) -> None:
    """A token the gateway has just verified (and cached) answers 401 right after its revoke."""
    created = await stack.admin.ok("POST", "/oauth/authorizations", {}, 201)
    api = stack.admin.as_token(created["access_token"]["token"])
    assert (await api.get("/account")).status == 200
    await stack.admin.ok("DELETE", f"/oauth/authorizations/{created['id']}")
    answer = await api.get("/account")
    assert answer.status == 401
    assert "revoked" in answer.body["message"]


async def test_a_token_revoked_by_itself_stops_working(stack: Stack) -> None:
    """Revoking the very token that makes the request ends it for the next request."""
    created = await stack.admin.ok("POST", "/oauth/authorizations", {}, 201)
    api = stack.admin.as_token(created["access_token"]["token"])
    assert (await api.get("/account")).status == 200
    await api.ok("DELETE", f"/oauth/authorizations/{created['id']}")
    assert (await api.get("/account")).status == 401
