"""Keys, tokens and a real JWKS server for the security tests (SPEC §9)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from tests.support.server import GatewayServer

ISSUER = "https://issuer.test"


@dataclass(frozen=True)
class KeyPair:
    private: Any
    kid: str

    @property
    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if isinstance(self.private, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
        data: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        data.update({"kid": self.kid, "use": "sig", "alg": "RS256" if algorithm is jwt.algorithms.RSAAlgorithm else "ES256"})
        return data

    @property
    def algorithm(self) -> str:
        return "RS256" if isinstance(self.private, rsa.RSAPrivateKey) else "ES256"


def rsa_pair(kid: str = "rsa-1") -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid)


def ec_pair(kid: str = "ec-1") -> KeyPair:
    return KeyPair(ec.generate_private_key(ec.SECP256R1()), kid)


def mint(pair: KeyPair, sub: str = "alice", *, issuer: str | None = ISSUER, exp_in: float = 600,
         nbf_in: float | None = None, with_kid: bool = True, **claims: Any) -> str:
    """A properly signed token for ``sub``."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(exp_in), **claims}
    if issuer is not None:
        payload["iss"] = issuer
    if nbf_in is not None:
        payload["nbf"] = now + int(nbf_in)
    key: PrivateKeyTypes = pair.private
    return jwt.encode(payload, key, algorithm=pair.algorithm, headers={"kid": pair.kid} if with_kid else None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _claims(sub: str) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iss": ISSUER, "iat": now, "exp": now + 600}


def unsigned_token(sub: str = "mallory") -> str:
    """``alg: none`` with an empty signature."""
    head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{_b64(json.dumps(_claims(sub)).encode())}."


def hmac_confused_token(public_pem: str, sub: str = "mallory", kid: str = "rsa-1") -> str:
    """HS256 signed with the server's *public* key as the HMAC secret (algorithm confusion)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(_claims(sub)).encode())
    signature = hmac.new(public_pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


@dataclass
class JwksServer:
    """A real HTTP server on loopback serving ``/.well-known/jwks.json``; counts fetches."""

    keys: list[dict[str, Any]]
    hits: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def __enter__(self) -> JwksServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                outer.hits += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mint_claims(pair: KeyPair, claims: dict[str, Any], *, issuer: str = ISSUER, exp_in: float = 600) -> str:
    """A properly signed token with exactly ``claims`` (plus ``iss``/``iat``/``exp``): e.g. no ``sub``."""
    now = int(time.time())
    payload: dict[str, Any] = {"iss": issuer, "iat": now, "exp": now + int(exp_in), **claims}
    return jwt.encode(payload, pair.private, algorithm=pair.algorithm, headers={"kid": pair.kid})


class AccessLoggedGateway(GatewayServer):
    """A real gateway whose uvicorn writes its access log (``uvicorn.access`` at INFO), as ``agw serve`` does.

    Like the CLI it passes ``log_config=None``: the records go to whatever handlers the
    ``uvicorn.access`` logger has (a test attaches ``caplog.handler``).
    """

    def __init__(self, deploy_dir: Path, overrides: dict[str, Any] | None = None) -> None:
        super().__init__(deploy_dir, overrides=overrides)
        config = uvicorn.Config(self.app, log_level="info", access_log=True, log_config=None, lifespan="on",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
