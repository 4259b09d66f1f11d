"""The encrypted credential file (SPEC §12).

File format (``settings.credentials.file``, JSON, written atomically, mode 0600)::

    {
      "version": 1,
      "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "length": 32},
      "salt": "<base64, 16 random bytes>",
      "verify": {"nonce": "<base64>", "ciphertext": "<base64>"},
      "entries": {"<name>": {"nonce": "<base64>", "ciphertext": "<base64>"}}
    }

* The key is ``scrypt(master secret, salt)`` (32 bytes → AES-256-GCM).
* Every seal uses a fresh 12-byte random nonce; the entry name is the associated
  data, so a ciphertext moved to another name does not open.
* ``verify`` seals a fixed marker: opening the store with a wrong master secret
  fails on it with "wrong master secret" instead of yielding garbage.
* A tampered entry fails GCM authentication (``InvalidTag``) and is refused with a
  message naming the entry.

A change (``agw credentials set`` / ``delete``) is a read-modify-write of the whole file, so it
runs under ``editing``: an exclusive ``flock`` on ``.<file>.lock`` beside the store, held from
the read to the rename. Two commands run at once take turns instead of the later rename
silently dropping the entry the other one added.

Errors are ``CredentialError`` (a ``ConfigError``: at startup it stops the gateway
with a clear message, in the CLI it is printed).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from app.config import CredentialSettings, Settings
from app.errors import ConfigError

FORMAT_VERSION = 1
_VERIFY_AAD = b"agw:verify"
_VERIFY_MARKER = b"agw-credentials-v1"
_NONCE_BYTES = 12
_SALT_BYTES = 16
#: the most memory scrypt may take (128·n·r bytes) for the parameters a file records: 1 GiB,
#: 32 times the default; a corrupted file must not make the gateway allocate terabytes
MAX_KDF_MEMORY_BYTES = 1 << 30
#: the most parallel scrypt lanes (each one more pass) a file may ask for
MAX_KDF_P = 16
#: entry names: like agent keys (letters, digits, ``_ . -``), no path tricks
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


class CredentialError(ConfigError):
    """A credential cannot be read, written or decrypted; the message says why."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """scrypt cost parameters, stored in the file so they can be raised later."""

    n: int = 2**15
    r: int = 8
    p: int = 1
    length: int = 32

    def as_json(self) -> dict[str, Any]:
        return {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p, "length": self.length}

    @classmethod
    def from_json(cls, data: Any, path: Path) -> KdfParams:
        """The parameters a file records; ``CredentialError`` for any scrypt would refuse (a
        ``ValueError`` with a traceback) or that would take more than ``MAX_KDF_MEMORY_BYTES``."""
        if not isinstance(data, Mapping) or data.get("name") != "scrypt":
            raise CredentialError(f"{path}: unsupported key derivation {data!r} (expected scrypt)")
        values = {name: data.get(name) for name in ("n", "r", "p", "length")}
        numbers = {name: value for name, value in values.items() if isinstance(value, int) and not isinstance(value, bool)}
        if len(numbers) != len(values):
            raise CredentialError(f"{path}: malformed kdf parameters (n, r, p and length must be integers)")
        params = cls(**numbers)
        if params.length != 32:
            raise CredentialError(f"{path}: kdf length must be 32 (AES-256)")
        if params.n < 2 or params.n & (params.n - 1) or not 1 <= params.r or not 1 <= params.p <= MAX_KDF_P:
            raise CredentialError(f"{path}: malformed kdf parameters (n must be a power of 2, r at least 1, "
                                  f"p from 1 to {MAX_KDF_P})")
        if 128 * params.n * params.r > MAX_KDF_MEMORY_BYTES:
            raise CredentialError(f"{path}: kdf parameters n={params.n}, r={params.r} would take "
                                  f"{128 * params.n * params.r >> 20} MiB (at most {MAX_KDF_MEMORY_BYTES >> 20})")
        return params


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, path: Path, what: str) -> bytes:
    if not isinstance(value, str):
        raise CredentialError(f"{path}: {what} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CredentialError(f"{path}: {what} is not valid base64") from exc


def check_name(name: str) -> str:
    """A valid entry name or ``CredentialError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise CredentialError(f"invalid credential name {name!r}: use letters, digits, '_', '.', '-'")
    return name


class CredentialStore:
    """One open credential file: the derived key plus the sealed entries (SPEC §12).

    ``open`` (or ``create``) checks the master secret against the verification entry;
    ``get`` decrypts one entry; ``set``/``delete`` change the in-memory entries and
    ``save`` writes the file atomically.
    """

    def __init__(self, path: Path, kdf: KdfParams, salt: bytes, key: bytes,
                 verify: dict[str, str], entries: dict[str, dict[str, str]]) -> None:
        self.path = path
        self._kdf = kdf
        self._salt = salt
        self._aead = AESGCM(key)
        self._verify = verify
        self._entries = entries

    # -- opening ---------------------------------------------------------------------

    @staticmethod
    def _derive(secret: str, salt: bytes, kdf: KdfParams) -> bytes:
        if not secret:
            raise CredentialError("the master secret is empty")
        # any bytes (``master_secret``): a secret that is not UTF-8 text comes as surrogate escapes
        return Scrypt(salt=salt, length=kdf.length, n=kdf.n, r=kdf.r, p=kdf.p).derive(
            secret.encode("utf-8", "surrogateescape"))

    @classmethod
    def create(cls, path: Path, secret: str, kdf: KdfParams | None = None) -> CredentialStore:
        """A new, empty store (not yet saved) sealed with ``secret``."""
        params = kdf or KdfParams()
        salt = os.urandom(_SALT_BYTES)
        store = cls(path, params, salt, cls._derive(secret, salt, params), {}, {})
        store._verify = store._seal(_VERIFY_AAD, _VERIFY_MARKER)
        return store

    @classmethod
    def open(cls, path: Path, secret: str) -> CredentialStore:
        """Open an existing store; a wrong ``secret`` raises "wrong master secret"."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise CredentialError(f"credential store {path} does not exist (create it with 'agw credentials set')") from exc
        except OSError as exc:
            raise CredentialError(f"cannot read credential store {path}: {exc.strerror}") from exc
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CredentialError(f"credential store {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise CredentialError(f"credential store {path}: unsupported format (expected version {FORMAT_VERSION})")
        kdf = KdfParams.from_json(data.get("kdf"), path)
        salt = _unb64(data.get("salt"), path, "salt")
        verify = data.get("verify")
        entries = data.get("entries", {})
        if not isinstance(verify, dict) or not isinstance(entries, dict):
            raise CredentialError(f"credential store {path}: missing 'verify' or 'entries'")
        store = cls(path, kdf, salt, cls._derive(secret, salt, kdf), verify, entries)
        try:
            marker = store._open_sealed(_VERIFY_AAD, verify, "verify")
        except InvalidTag:
            raise CredentialError(
                f"wrong master secret for credential store {path} (or its verification entry was tampered with)"
            ) from None
        if marker != _VERIFY_MARKER:
            raise CredentialError(f"wrong master secret for credential store {path}")
        return store

    @classmethod
    def open_or_create(cls, path: Path, secret: str) -> CredentialStore:
        return cls.open(path, secret) if path.exists() else cls.create(path, secret)

    # -- sealing ---------------------------------------------------------------------

    def _seal(self, aad: bytes, plaintext: bytes) -> dict[str, str]:
        nonce = os.urandom(_NONCE_BYTES)
        return {"nonce": _b64(nonce), "ciphertext": _b64(self._aead.encrypt(nonce, plaintext, aad))}

    def _open_sealed(self, aad: bytes, sealed: Mapping[str, Any], what: str) -> bytes:
        nonce = _unb64(sealed.get("nonce"), self.path, f"{what}.nonce")
        ciphertext = _unb64(sealed.get("ciphertext"), self.path, f"{what}.ciphertext")
        if len(nonce) != _NONCE_BYTES:
            raise CredentialError(f"credential store {self.path}: {what} has a malformed nonce")
        return self._aead.decrypt(nonce, ciphertext, aad)

    @staticmethod
    def _aad(name: str) -> bytes:
        return b"agw:entry:" + name.encode("utf-8")

    # -- entries ---------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> str:
        """The decrypted value of ``name``; tampering or a missing entry raises."""
        sealed = self._entries.get(name)
        if not isinstance(sealed, dict):
            raise CredentialError(f"no credential named {name!r} in {self.path}")
        try:
            plaintext = self._open_sealed(self._aad(name), sealed, f"entry {name!r}")
        except InvalidTag:
            raise CredentialError(
                f"credential {name!r} in {self.path} failed authentication: the file was tampered with or corrupted"
            ) from None
        return plaintext.decode("utf-8")

    def set(self, name: str, value: str) -> None:
        check_name(name)
        self._entries[name] = self._seal(self._aad(name), value.encode("utf-8"))

    def delete(self, name: str) -> bool:
        return self._entries.pop(name, None) is not None

    def save(self) -> None:
        """Write the file atomically (temporary file + rename), readable by the owner only."""
        document = {
            "version": FORMAT_VERSION,
            "kdf": self._kdf.as_json(),
            "salt": _b64(self._salt),
            "verify": self._verify,
            "entries": dict(sorted(self._entries.items())),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fp:
                fp.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
                fp.flush()
                os.fsync(fp.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextmanager
def editing(path: Path, secret: str, *, create: bool) -> Iterator[CredentialStore]:
    """The store at ``path`` opened (or, with ``create``, created when missing) for a change the
    caller ``save``s inside the ``with``; other editors of the same file wait until it ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the descriptor is closed
        yield CredentialStore.open_or_create(path, secret) if create else CredentialStore.open(path, secret)
    finally:
        os.close(lock)


def master_secret(config: CredentialSettings, base_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """The master secret: the configured environment variable, else the configured file (its text
    without surrounding white space). Any bytes will do, UTF-8 text or not (``head -c 32
    /dev/urandom``): bytes that are not UTF-8 are kept as surrogate escapes, as Python gives them
    for the environment, and ``_derive`` turns them back into the same bytes."""
    environ = os.environ if env is None else env
    value = environ.get(config.master_secret_env, "")
    if value:
        return value
    if config.master_secret_file:
        path = Path(config.master_secret_file).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            value = path.read_bytes().decode("utf-8", "surrogateescape").strip()
        except OSError as exc:
            raise CredentialError(f"cannot read the master secret file {path}: {exc.strerror}") from exc
        if value:
            return value
        raise CredentialError(f"the master secret file {path} is empty")
    raise CredentialError(
        f"no master secret: set the environment variable {config.master_secret_env} "
        "or credentials.master-secret-file"
    )


def store_path(settings: Settings) -> Path:
    return settings.resolve(settings.credentials.file)


def provider_api_keys(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Decrypt the ``api-key-ref`` of every provider that has one (SPEC §12), once.

    Returns provider key → API key. No provider with a reference → ``{}`` and the
    store is never touched. A missing entry or a wrong master secret raises
    ``CredentialError`` naming the provider.
    """
    refs = {key: p.api_key_ref for key, p in settings.agent.providers.items() if p.api_key_ref}
    if not refs:
        return {}
    store = CredentialStore.open(store_path(settings), master_secret(settings.credentials, settings.base_dir, env))
    keys: dict[str, str] = {}
    for provider, ref in refs.items():
        if ref not in store:
            raise CredentialError(f"provider {provider!r}: api-key-ref {ref!r} is not in the credential store {store.path}")
        keys[provider] = store.get(ref)
    return keys
