"""Encrypted provider credentials (SPEC §12).

``CredentialStore`` keeps named secrets in one JSON file, each sealed with
AES-256-GCM under a key derived (scrypt) from a master secret. ``master_secret``
reads that secret from the environment or a file; ``provider_api_keys`` decrypts
every ``api-key-ref`` of the configuration once, at startup.
"""

from app.credentials.store import (
    CredentialError,
    CredentialStore,
    master_secret,
    provider_api_keys,
)

__all__ = ["CredentialError", "CredentialStore", "master_secret", "provider_api_keys"]
