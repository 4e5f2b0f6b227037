"""Bearer tokens (JWT): the configured key, verification and minting. Framework-free: the
HTTP edge applies it to requests (livecomments/edge/auth.py), config validation loads the key.

The accepted algorithms are pinned to the configured key, never taken from the token: a
secret accepts HS256 only, an RSA key RS256, an EC key the ES algorithm of its curve, an
Ed25519/Ed448 key EdDSA. So `alg: none`, and an HS256 token "signed" with the public key
as its secret (the classic algorithm confusion), are refused like any bad signature.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from livecomments.errors import ApiError

VERIFIED_CACHE_SIZE = 10_000  # tokens remembered as verified (~3 MB); the least recently used go first
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key is at least as long as the hash (256 bits)
REALM = 'Bearer realm="livecomments"'
MODERATOR = "moderator"
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class TokenKeyError(ValueError):
    """The configured key cannot verify tokens; the message is one line for the user."""


class Unauthorized(ApiError):
    def __init__(self, message: str, *, invalid: bool) -> None:
        # RFC 6750 §3.1: no error attribute when the request carried no token at all.
        challenge = f'{REALM}, error="invalid_token", error_description="{message}"' if invalid else REALM
        super().__init__(401, "unauthorized", message, {"WWW-Authenticate": challenge})


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str  # the user: what rate limits, bans and deletes key on
    author: str  # what comments show: the token's `name`, else `sub`
    moderator: bool


@dataclass(frozen=True, slots=True)
class Verifier:
    key: Any  # the HS256 secret (bytes) or a cryptography public key
    algorithms: tuple[str, ...]


def _read_pem(value: str) -> bytes:
    """`auth_jwt_public_key` is the PEM itself (environment, secrets managers) or a path to it (files)."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    try:
        with open(os.path.expanduser(value), "rb") as fh:
            return fh.read()
    except OSError as e:
        raise TokenKeyError(f"auth_jwt_public_key: cannot read {value}: {e.strerror}") from None


def algorithm_of(key: Any) -> str:
    """The one algorithm a key (public or private) signs or verifies with."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name not in EC_ALGORITHMS:
            raise TokenKeyError(f"EC curve {key.curve.name} is not one of {', '.join(EC_ALGORITHMS)}")
        return EC_ALGORITHMS[key.curve.name]
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey | ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "EdDSA"
    raise TokenKeyError(f"unsupported key type {type(key).__name__}: use RSA, EC (P-256/384/521) or Ed25519")


def load_verifier(secret: str, public_key: str) -> Verifier | None:
    """The verifier of the configured key; None when none is (open posting)."""
    if secret and public_key:
        raise TokenKeyError("set auth_jwt_secret or auth_jwt_public_key, not both")
    if secret:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise TokenKeyError(f"auth_jwt_secret must be at least {MIN_SECRET_BYTES} bytes")
        return Verifier(secret.encode(), ("HS256",))
    if not public_key:
        return None
    pem = _read_pem(public_key)
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise TokenKeyError("auth_jwt_public_key is not a PEM public key") from None
    return Verifier(key, (algorithm_of(key),))


class Authenticator:
    """Verifies tokens. A client posts many times with one token: a verified token is remembered
    (its exact bytes, so nothing unverified is ever trusted) until its `exp`: a full HS256
    verification costs a post ~100 µs of CPU, a remembered token next to nothing (benchmarks/auth_cost.py)."""

    def __init__(self, verifier: Verifier, *, audience: str = "", issuer: str = "",
                 cache_size: int = VERIFIED_CACHE_SIZE) -> None:
        self._verifier = verifier
        self._audience = audience or None
        self._issuer = issuer or None
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()  # token -> (identity, exp)
        self._cache_size = cache_size

    def verify(self, token: str) -> Identity:
        remembered = self._verified.get(token)
        if remembered is not None:
            identity, exp = remembered
            if time.time() < exp:  # PyJWT's rule with no leeway: expired once exp <= now
                self._verified.move_to_end(token)
                return identity
            del self._verified[token]
        identity, exp = self._decode(token)
        self._verified[token] = (identity, exp)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return identity

    def _decode(self, token: str) -> tuple[Identity, float]:
        try:
            claims = jwt.decode(
                token, self._verifier.key, algorithms=list(self._verifier.algorithms),
                audience=self._audience, issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired", invalid=True) from None
        except jwt.InvalidTokenError as e:  # bad signature, alg, claims, or not a JWT at all
            raise Unauthorized(f"invalid token: {_reason(e)}", invalid=True) from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("invalid token: sub must be a non-empty string", invalid=True)
        name = claims.get("name")
        roles = claims.get("roles")
        moderator = isinstance(roles, list) and MODERATOR in roles
        identity = Identity(sub=sub, author=name if isinstance(name, str) and name else sub, moderator=moderator)
        return identity, float(claims["exp"])


def _reason(e: jwt.InvalidTokenError) -> str:
    # PyJWT's messages name the failing check; none echoes the token. Keep them short and quote-free
    # (they go into the WWW-Authenticate header).
    return (str(e) or type(e).__name__).replace('"', "'")[:120]


def mint(key: Any, algorithm: str, *, sub: str, name: str = "", moderator: bool = False, ttl: float = 3600,
         audience: str = "", issuer: str = "") -> str:
    """A signed token for `sub` (the `livecomments token` command, tests and benchmarks)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl)}
    if name:
        claims["name"] = name
    if moderator:
        claims["roles"] = [MODERATOR]
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm=algorithm)
