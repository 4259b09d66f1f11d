"""Security at the edge (SPEC §9): JWT auth, signed data links, CORS, secret masking.

| module | concept |
|---|---|
| ``jwt_auth`` | ``JwtVerifier`` (pyjwt, JWKS or local PEM) and ``AuthMiddleware`` for ``/api/**`` |
| ``data_tokens`` | HMAC-SHA256 data-file link tokens with secret rotation; ``signed_data_url`` |
| ``cors`` | ``agent.cors.*`` → Starlette ``CORSMiddleware`` scoped to ``path-pattern`` |
| ``masking`` | masking credentials in log lines (interaction log, SPEC §7) |
| ``access_log`` | masking credential query values (``token=``…) in uvicorn's access log |
"""

from app.security.access_log import QueryCredentialFilter, access_log_masking
from app.security.cors import ScopedCORSMiddleware, cors_options
from app.security.data_tokens import issue_data_token, sign_data_token, signed_data_url, verify_data_token
from app.security.jwt_auth import ASYMMETRIC_ALGORITHMS, AuthMiddleware, JwtVerifier, bearer_token, build_verifier
from app.security.masking import MASK, is_sensitive_key, mask_text, mask_value

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "AuthMiddleware",
    "JwtVerifier",
    "MASK",
    "QueryCredentialFilter",
    "ScopedCORSMiddleware",
    "access_log_masking",
    "bearer_token",
    "build_verifier",
    "cors_options",
    "is_sensitive_key",
    "issue_data_token",
    "mask_text",
    "mask_value",
    "sign_data_token",
    "signed_data_url",
    "verify_data_token",
]
