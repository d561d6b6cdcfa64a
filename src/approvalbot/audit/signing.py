"""The service's Ed25519 signing key: checkpoints, grants and receipts are signed with it.

The key comes from APPROVALBOT_SIGNING_KEY (a PEM private key, or base64 of the
raw 32-byte seed), or else is generated once into `<data_dir>/signing_key.pem`
(mode 0600) under the same file lock as other stored secrets, so processes
started together agree on it. Only the public half ever leaves this module:
`Signer` keeps the private key in a private attribute and its repr names the
key id alone.

Verifiers (auditors, executors) work with public keys only; `load_public_keys`
reads every form this service hands out (PEM, JWK, JWKS, base64 raw) and keys
them by key id, so checkpoints and grants name the key that signed them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from approvalbot.config import Settings
from approvalbot.keyfiles import stored_secret

KEY_FILE = "signing_key.pem"

Keyring = Mapping[str, Ed25519PublicKey]


class SigningKeyError(ValueError):
    """The configured key cannot be used. Messages never include the key material."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64_any(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not, whitespace ignored; raises ValueError."""
    compact = "".join(text.split()).rstrip("=").replace("-", "+").replace("_", "/")
    return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    return {"kid": key_id(key), "kty": "OKP", "crv": "Ed25519", "x": b64url(raw_public(key))}


def verify_signature(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
        return True
    except InvalidSignature:
        return False


class Signer:
    """Signs with the private key; exposes only public material."""

    __slots__ = ("_private", "key_id", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey):
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @property
    def jwt_key(self) -> Ed25519PrivateKey:
        """For PyJWT's encode(); do not store or serialise it."""
        return self._private

    @property
    def keyring(self) -> dict[str, Ed25519PublicKey]:
        return {self.key_id: self.public_key}

    def public_pem(self) -> str:
        return public_pem(self.public_key)

    def jwk(self) -> dict[str, str]:
        return public_jwk(self.public_key)

    def jwks(self) -> dict[str, Any]:
        """The body of GET /v1/keys."""
        return {"keys": [{**self.jwk(), "pem": self.public_pem()}]}

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:  # never pickle the private key into a job queue or a cache
        raise TypeError("a Signer cannot be pickled")


def _private_from_text(value: str) -> Ed25519PrivateKey:
    text = value.strip()
    if "-----BEGIN" in text:
        # Environment files often carry a PEM on one line with literal "\n".
        pem = text.replace("\\n", "\n").encode()
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise SigningKeyError(
                "APPROVALBOT_SIGNING_KEY looks like PEM but is not an unencrypted private key"
            ) from None
    else:
        try:
            raw = b64_any(text)
        except (binascii.Error, ValueError):
            raise SigningKeyError(
                "APPROVALBOT_SIGNING_KEY must be a PEM private key or base64 of 32 raw bytes"
            ) from None
        if len(raw) == 32:
            return Ed25519PrivateKey.from_private_bytes(raw)
        try:  # base64 of a PKCS#8 DER key, as `openssl genpkey -outform DER | base64` gives
            key = serialization.load_der_private_key(raw, password=None)
        except (ValueError, TypeError):
            raise SigningKeyError("APPROVALBOT_SIGNING_KEY must decode to 32 bytes (an Ed25519 seed)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError("APPROVALBOT_SIGNING_KEY must be an Ed25519 key")
    return key


def _generated(data_dir: Path) -> Ed25519PrivateKey:
    def make() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    pem = stored_secret(data_dir, KEY_FILE, make)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(f"{data_dir / KEY_FILE} is not a readable private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{data_dir / KEY_FILE} is not an Ed25519 key")
    return key


def load_signer(settings: Settings) -> Signer:
    if settings.signing_key is not None:
        return Signer(_private_from_text(settings.signing_key.get_secret_value()))
    return Signer(_generated(settings.data_dir))


_cache: dict[tuple[str, str], Signer] = {}
_cache_lock = threading.Lock()


def signer_for(settings: Settings) -> Signer:
    """One Signer per key source and process, shared by the service hook and the web app."""
    secret = settings.signing_key.get_secret_value() if settings.signing_key is not None else ""
    source = (
        str(Path(settings.data_dir).resolve()),
        hashlib.sha256(secret.encode()).hexdigest() if secret else "",
    )
    with _cache_lock:
        found = _cache.get(source)
        if found is None:
            found = _cache[source] = load_signer(settings)
        return found


# ---------------------------------------------------------------------------
# Public keys, for verifiers

PublicKeyInput = Ed25519PublicKey | Signer | Mapping[str, Ed25519PublicKey] | str | bytes


def _public_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        raise SigningKeyError("only OKP/Ed25519 JWKs are supported")
    try:
        raw = b64url_decode(jwk["x"])
    except (binascii.Error, ValueError):
        raise SigningKeyError("the JWK's x is not base64url") from None
    if len(raw) != 32:
        raise SigningKeyError("the JWK's x is not a 32-byte Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_keys(data: str | bytes) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id, from PEM (one or more blocks), a JWK, a JWKS (GET /v1/keys) or base64 raw."""
    text = data.decode() if isinstance(data, bytes) else data
    text = text.strip()
    found: list[Ed25519PublicKey] = []
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            raise SigningKeyError("the key file is not valid JSON") from None
        entries = doc.get("keys", [doc]) if isinstance(doc, dict) else []
        for entry in entries:
            if not isinstance(entry, dict):
                raise SigningKeyError("a JWKS entry is not an object")
            found.append(_public_from_jwk(entry))
    elif "-----BEGIN" in text:
        if "PRIVATE KEY-----" in text:
            raise SigningKeyError("this is a private key; give verifiers the public key (`approvalbot keys show`)")
        for block in text.split("-----END PUBLIC KEY-----"):
            if "-----BEGIN" not in block:
                continue
            pem = (block.strip() + "\n-----END PUBLIC KEY-----\n").encode()
            try:
                key = serialization.load_pem_public_key(pem)
            except (ValueError, TypeError):
                raise SigningKeyError("a PEM block is not a public key") from None
            if not isinstance(key, Ed25519PublicKey):
                raise SigningKeyError("only Ed25519 public keys are supported")
            found.append(key)
    else:
        try:
            raw = b64_any(text)
        except (binascii.Error, ValueError):
            raise SigningKeyError("the public key is neither PEM, JWK nor base64") from None
        if len(raw) != 32:
            raise SigningKeyError("a base64 public key must be 32 raw bytes")
        found.append(Ed25519PublicKey.from_public_bytes(raw))
    if not found:
        raise SigningKeyError("no public key found")
    return {key_id(k): k for k in found}


def as_keyring(keys: PublicKeyInput | None) -> dict[str, Ed25519PublicKey]:
    """Normalise whatever a caller has (a key, a Signer, PEM text, a mapping) to {key id: key}."""
    if keys is None:
        return {}
    if isinstance(keys, Signer):
        return keys.keyring
    if isinstance(keys, Ed25519PublicKey):
        return {key_id(keys): keys}
    if isinstance(keys, (str, bytes)):
        return load_public_keys(keys)
    if isinstance(keys, Mapping):
        return {key_id(k): k for k in keys.values()}
    raise TypeError(f"cannot use {type(keys).__name__} as a public key")
