"""JWT bearer authentication for ``/api/**`` (SPEC §2 ``agent.auth.*``, §9 "Auth").

``JwtVerifier`` checks one bearer token with pyjwt against a JWKS (``jwks-uri``,
fetched with ``jwt.PyJWKClient`` and cached ``jwks-cache-seconds``) or a PEM
``local-public-key``. Only asymmetric algorithms are accepted (RS*, PS*, ES*,
EdDSA): ``alg: none`` and the HMAC-signed-with-the-public-key confusion are refused
because ``HS*``/``none`` are never in the accepted list. A token's ``alg`` must also fit the key that
verifies it (its family; an ECDSA key's curve): a JWKS RSA key named by an ``ES256`` token, or
an ``ES384`` token against a P-256 key, is a 401 like any bad token. ``exp`` and ``sub`` are
required, ``exp``/``nbf`` enforced, ``iss`` checked when ``agent.auth.issuer`` is set.
With ``agent.auth.audience`` set, ``aud`` is required and must name it (a string or a
list containing it); without it, ``aud`` is not checked (a token carrying one is fine).
The ``sub`` ``anonymous`` is reserved: it is the one user of auth-off mode, the owner
of every chat written without auth, so no token may claim it (SPEC §9).

``AuthMiddleware`` is a pure ASGI middleware (it never buffers the SSE responses it
wraps): on every ``/api/**`` request (and the protocol adapters' ``/v1/**``, ``/ag-ui/**``,
``/mcp``; the path as the app routes it, without the ``root_path`` prefix of a gateway served
under one) it verifies ``Authorization: Bearer <JWT>`` and
stores the token's ``sub`` as ``request.state.user`` and its ``roles``/``role`` claim as
``request.state.roles`` (SPEC §19: the admin role sees every user's usage); anything else gets the 401
envelope ``{"code": 4010, "msg": …}``. With auth disabled every request is the one
``anonymous`` user. Exception: with data-link tokens on (SPEC §9 "Data links"),
``GET /api/ap/data`` (and ``GET /api/ap/artifact``, SPEC §23) carrying a ``token`` parameter is
authorised by that signed token instead (browsers cannot put a header on ``<img src>``); the
route verifies it.

Fail closed: auth enabled with neither ``jwks-uri`` nor ``local-public-key`` raises
``ConfigError`` when the verifier is built, so the app refuses to start. Tokens are
never logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import AuthSettings, Settings
from app.contract.envelope import encode_body, failure_body
from app.contract.identity import ANONYMOUS
from app.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from jwt.types import Options  # a TypedDict in recent pyjwt; type checking only

logger = logging.getLogger(__name__)

RSA_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "ES512")
OKP_ALGORITHMS: tuple[str, ...] = ("EdDSA",)
#: every algorithm a token may use: asymmetric only (never ``none``, never ``HS*``)
ASYMMETRIC_ALGORITHMS: tuple[str, ...] = RSA_ALGORITHMS + EC_ALGORITHMS + OKP_ALGORITHMS

#: allowed clock skew for ``exp``/``nbf``/``iat``, seconds
LEEWAY_SECONDS = 30
#: longest bearer token we even look at
MAX_TOKEN_CHARS = 16_384
#: the routes a signed link may authorise instead of a JWT: data files, and (SPEC §23) chat files
_SIGNED_ROUTES = ("/api/ap/data", "/api/ap/artifact")
_SLASHES = re.compile(r"/{2,}")


#: the one ECDSA algorithm of each curve (pyjwt refuses a key of another curve with ``InvalidKeyError``)
_EC_ALGORITHM_OF_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def _key_algorithms(key: Any) -> tuple[str, ...]:
    """The algorithms a public key can verify (its family; for ECDSA, its curve's one); ``()`` for
    any other key. A token whose ``alg`` is not among them is refused before pyjwt sees it: pyjwt
    answers such a pair with ``TypeError`` or ``InvalidKeyError``, not an ``InvalidTokenError``."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHM_OF_CURVE.get(key.curve.name)
        return (algorithm,) if algorithm is not None else ()
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return OKP_ALGORITHMS
    return ()


def _algorithms_for(key: Any) -> tuple[str, ...]:
    """The algorithms of a local public key (a key pins its family); ``ConfigError`` for a key none fits."""
    algorithms = _key_algorithms(key)
    if not algorithms:
        curve = f" on curve {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) else ""
        raise ConfigError(f"agent.auth.local-public-key: unsupported key type {type(key).__name__}{curve}")
    return algorithms


class JwtVerifier:
    """Verifies bearer tokens for one ``AuthSettings`` (SPEC §9). Build with ``from_settings``."""

    def __init__(
        self,
        *,
        issuer: str = "",
        audience: str = "",
        local_key: Any = None,
        jwks_client: jwt.PyJWKClient | None = None,
        algorithms: Sequence[str] = ASYMMETRIC_ALGORITHMS,
    ) -> None:
        assert local_key is not None or jwks_client is not None, "a key source is required"
        self._issuer = issuer
        self._audience = audience
        self._local_key = local_key
        self._jwks = jwks_client
        self._algorithms = list(algorithms)

    @classmethod
    def from_settings(cls, auth: AuthSettings) -> JwtVerifier:
        """Build the verifier or raise ``ConfigError`` (fail closed: no key source, bad PEM)."""
        if auth.local_public_key.strip():
            try:
                key = load_pem_public_key(auth.local_public_key.strip().encode("utf-8"))
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    "agent.auth.local-public-key is not a PEM public key (expected '-----BEGIN PUBLIC KEY-----')"
                ) from exc
            return cls(issuer=auth.issuer, audience=auth.audience.strip(), local_key=key,
                       algorithms=_algorithms_for(key))
        if auth.jwks_uri.strip():
            client = jwt.PyJWKClient(
                auth.jwks_uri.strip(),
                cache_jwk_set=True,
                lifespan=max(1, auth.jwks_cache_seconds),
                cache_keys=True,
                timeout=10,
            )
            return cls(issuer=auth.issuer, audience=auth.audience.strip(), jwks_client=client)
        raise ConfigError(
            "agent.auth.enabled is true but neither agent.auth.jwks-uri nor agent.auth.local-public-key "
            "is set; refusing to start without a way to verify tokens (set one, or set "
            "agent.auth.enabled: false / AGENT_AUTH_ENABLED=false deliberately)"
        )

    def _key_for(self, token: str) -> Any:
        if self._local_key is not None:
            return self._local_key
        assert self._jwks is not None
        try:
            return self._jwks.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError as exc:
            logger.warning("JWKS endpoint unreachable: %s", type(exc).__name__)
            raise AuthError("cannot verify the token: the key set is unavailable") from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise AuthError("invalid token: no matching signing key") from exc

    def verify(self, token: str) -> str:
        """The token's ``sub``; ``AuthError`` (401) for anything not fully valid. Blocking (JWKS fetch)."""
        return str(self.verify_claims(token)["sub"])

    def verify_claims(self, token: str) -> dict[str, Any]:
        """The claims of a fully valid token (``sub`` checked as in ``verify``); else ``AuthError``."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid token: malformed") from exc
        if header.get("alg") not in self._algorithms:
            raise AuthError(f"invalid token: algorithm {str(header.get('alg'))[:16]!r} is not accepted")
        key = self._key_for(token)
        if header["alg"] not in _key_algorithms(key):  # e.g. ES256 with an RSA key of the JWKS, ES384 with a P-256 key
            raise AuthError(f"invalid token: algorithm {header['alg']!r} does not fit its signing key")
        if self._audience:
            audience: str | None = self._audience
            options: Options = {"require": ["exp", "sub", "aud"]}
        else:  # pyjwt would refuse every token carrying ``aud`` when no audience is given
            audience, options = None, {"require": ["exp", "sub"], "verify_aud": False}
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                issuer=self._issuer or None,
                audience=audience,
                leeway=LEEWAY_SECONDS,
                options=options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("invalid token: expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("invalid token: not yet valid") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("invalid token: wrong issuer") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("invalid token: wrong audience") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"invalid token: missing claim {exc.claim!r}") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid token: signature or claims do not verify") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise AuthError("invalid token: 'sub' must be a non-empty string")
        if subject == ANONYMOUS:
            raise AuthError(f"invalid token: 'sub' {ANONYMOUS!r} is reserved for the user of auth-off mode")
        return claims

    async def verify_claims_async(self, token: str) -> dict[str, Any]:
        """``verify_claims`` off the event loop when a JWKS fetch may block."""
        if self._local_key is not None:
            return self.verify_claims(token)
        return await asyncio.to_thread(self.verify_claims, token)

    async def verify_async(self, token: str) -> str:
        """``verify`` off the event loop when a JWKS fetch may block."""
        if self._local_key is not None:
            return self.verify(token)
        return await asyncio.to_thread(self.verify, token)


def roles_of(claims: dict[str, Any]) -> frozenset[str]:
    """The roles a token names in its ``roles`` (list or string) or ``role`` (string or list) claim."""
    roles: set[str] = set()
    for name in ("roles", "role"):
        value = claims.get(name)
        items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        roles.update(item for item in items if isinstance(item, str) and item)
    return frozenset(roles)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header, or ``AuthError``."""
    if not authorization:
        raise AuthError("missing Authorization header (expected 'Bearer <JWT>')")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError("malformed Authorization header (expected 'Bearer <JWT>')")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthError("malformed Authorization header: token too long")
    return token


#: every path tree that runs or reads agents: the native API and the protocol adapters (SPEC §9, §17, §18)
PROTECTED_ROOTS: tuple[str, ...] = ("/api", "/v1", "/ag-ui", "/mcp")


def is_protected(path: str) -> bool:
    """Whether ``path`` is under ``/api/**``, ``/v1/**``, ``/ag-ui/**`` or ``/mcp``
    (compared case-insensitively, slashes collapsed)."""
    normal = _SLASHES.sub("/", path).lower()
    return any(normal == root or normal.startswith(root + "/") for root in PROTECTED_ROOTS)


def route_path(scope: Scope) -> str:
    """The path the app routes on: ``scope["path"]`` without the ``root_path`` prefix it carries when
    the app is served under one (``uvicorn --root-path /gw``, a ``Mount("/gw", …)``), exactly as
    Starlette's router takes it off. Judging the full path instead would see ``/gw/api/ap/chats``,
    not under ``/api``, and let the request through unauthenticated to the route ``/api/ap/chats``."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):]
    return path


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _has_data_token(scope: Scope) -> bool:
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    return any(part.split("=", 1)[0] == "token" for part in query.split("&"))


def build_verifier(settings: Settings) -> JwtVerifier | None:
    """The verifier for ``settings`` (``None`` when auth is off); ``ConfigError`` when it cannot be built."""
    auth = settings.agent.auth
    return JwtVerifier.from_settings(auth) if auth.enabled else None


class AuthMiddleware:
    """ASGI middleware setting ``scope["state"]["user"]`` (SPEC §9). See the module docstring."""

    def __init__(self, app: ASGIApp, verifier: JwtVerifier | None, data_tokens: bool = False) -> None:
        self.app = app
        self._verifier = verifier
        self._data_tokens = data_tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if self._verifier is None:
            state["user"] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if not is_protected(path):
            await self.app(scope, receive, send)
            return
        if self._data_tokens and _SLASHES.sub("/", path) in _SIGNED_ROUTES and _has_data_token(scope):
            state["user"] = ANONYMOUS  # the signed data link authorises this request (checked by the route)
            await self.app(scope, receive, send)
            return
        try:
            token = bearer_token(_header(scope, b"authorization"))
            claims = await self._verifier.verify_claims_async(token)
            state["user"], state["roles"] = claims["sub"], roles_of(claims)
        except AuthError as exc:
            client = scope.get("client") or ("?", 0)
            logger.info("auth refused %s %s from %s: %s", scope.get("method", "WS"), path, client[0], exc.message)
            if scope["type"] != "http":
                await send({"type": "websocket.close", "code": 1008})
                return
            if _SLASHES.sub("/", path).lower().startswith("/v1/"):  # OpenAI clients expect their error shape
                body = {"error": {"message": exc.message, "type": "authentication_error", "code": "invalid_token",
                                  "param": None}}
                response = Response(encode_body(body), status_code=exc.status, media_type="application/json")
            else:
                response = Response(encode_body(failure_body(exc.code, exc.message)), status_code=exc.status,
                                    media_type="application/json")
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


__all__ = [
    "ANONYMOUS",
    "ASYMMETRIC_ALGORITHMS",
    "AuthMiddleware",
    "JwtVerifier",
    "bearer_token",
    "build_verifier",
    "is_protected",
    "roles_of",
    "route_path",
]
