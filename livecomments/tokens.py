"""Bearer tokens (JWT): the configured key, verification and minting. Framework-free: the
HTTP edge applies it to requests (livecomments/edge/auth.py), config validation loads the key.

The accepted algorithms are pinned to the configured key, never taken from the token: a
secret accepts HS256 only, an RSA key RS256, an EC key the ES algorithm of its curve, an
Ed25519/Ed448 key EdDSA. So `alg: none`, and an HS256 token "signed" with the public key
as its secret (the classic algorithm confusion), are refused like any bad signature.

`exp`, `nbf` and `iat` are checked with a leeway (`auth_jwt_leeway`, default LEEWAY_S = 30 s):
with none, an issuer whose clock is a second ahead mints tokens that are refused as "not yet
valid" until our clock catches up, and a client's fresh token fails for no fault of its own.
Hosts under NTP agree within milliseconds, unsynchronised ones drift by seconds a day; 30 s
absorbs that while keeping a token alive at most 30 s past its `exp` (Spring Security allows
60 s, Microsoft's identity libraries 5 min).

A token is refused (401) when its `sub` is longer than MAX_SUB: a ban names the user by its
`sub`, so a user whose `sub` no ban could name could never be kept out. Its display name (`name`,
else `sub`) is cut to the server's `max_author` instead, because a long name hurts nobody and
refusing it would lock out a user whose issuer we do not control.
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
from livecomments.model import display_name

VERIFIED_CACHE_SIZE = 10_000  # tokens remembered as verified (~3 MB); the least recently used go first
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key is at least as long as the hash (256 bits)
REALM = 'Bearer realm="livecomments"'
MODERATOR = "moderator"
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
LEEWAY_S = 30.0  # seconds of clock skew forgiven in exp, nbf and iat (see above)
MAX_SUB = 256  # characters of a token's sub: what a ban can name (OpenID Connect's own limit is 255 ASCII)


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

    def __init__(self, verifier: Verifier, *, audience: str = "", issuer: str = "", leeway: float = LEEWAY_S,
                 max_author: int = 64, cache_size: int = VERIFIED_CACHE_SIZE) -> None:
        self._verifier = verifier
        self._leeway = leeway
        self._max_author = max_author
        self._audience = audience or None
        self._issuer = issuer or None
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()  # token -> (identity, exp + leeway)
        self._cache_size = cache_size

    def verify(self, token: str) -> Identity:
        remembered = self._verified.get(token)
        if remembered is not None:
            identity, exp = remembered
            if time.time() < exp:  # PyJWT's rule: expired once exp + leeway <= now
                self._verified.move_to_end(token)
                return identity
            del self._verified[token]
        identity, exp = self._decode(token)
        self._verified[token] = (identity, exp)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return identity

    def _decode(self, token: str) -> tuple[Identity, float]:
        if not token.isascii():  # a JWT is base64url and dots; PyJWT would fail encoding it (undecodable header bytes)
            raise Unauthorized("invalid token: not a JWT", invalid=True)
        try:
            claims = jwt.decode(
                token, self._verifier.key, algorithms=list(self._verifier.algorithms),
                audience=self._audience, issuer=self._issuer, leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
            expires = float(claims["exp"]) + self._leeway  # PyJWT checked exp is an integer, not that it fits a float
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired", invalid=True) from None
        except jwt.InvalidTokenError as e:  # bad signature, alg, claims, or not a JWT at all
            raise Unauthorized(f"invalid token: {_reason(e)}", invalid=True) from None
        except OverflowError:
            raise Unauthorized("invalid token: exp is out of range", invalid=True) from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("invalid token: sub must be a non-empty string", invalid=True)
        if len(sub) > MAX_SUB:
            raise Unauthorized(f"invalid token: sub is longer than {MAX_SUB} characters", invalid=True)
        name = claims.get("name")
        roles = claims.get("roles")
        moderator = isinstance(roles, list) and MODERATOR in roles
        author = display_name(name if isinstance(name, str) and name else sub, self._max_author)
        return Identity(sub=sub, author=author, moderator=moderator), expires


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
