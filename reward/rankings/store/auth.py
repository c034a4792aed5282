"""Password and token hashing. Only hashes are stored; secrets are shown once.

Passwords use scrypt with a per-user salt (slow on purpose: a leaked database does not give the
passwords away cheaply). Tokens are 256 random bits, so a single sha256 is enough: there is nothing
to brute-force, and a fast hash keeps the per-request lookup cheap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        str(password).encode("utf-8", "surrogatepass"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


_DUMMY: list[str] = []


def dummy_hash() -> str:
    """A hash of a random password with the current parameters: what an unknown user name is checked against,
    so rejecting it costs one scrypt, like rejecting a wrong password."""
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_urlsafe(16)))
    return _DUMMY[0]


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, n, r, p, salt, digest = stored.split("$")
    pw = str(password).encode("utf-8", "surrogatepass")
    got = hashlib.scrypt(pw, salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(got, base64.b64decode(digest))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
