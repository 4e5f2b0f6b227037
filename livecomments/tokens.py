"""Bearer tokens (JWT): the configured keys, verification and minting. Framework-free: the
HTTP edge applies it to requests (livecomments/edge/auth.py), config validation loads the keys.

The accepted algorithm is pinned to each configured key, never taken from the token: a
secret accepts HS256 only, an RSA key RS256, an EC key the ES algorithm of its curve, an
Ed25519/Ed448 key EdDSA. So `alg: none`, and an HS256 token "signed" with the public key
as its secret (the classic algorithm confusion), are refused like any bad signature.

Several keys verify at once, so a key can be rolled over without downtime (docs/identity.md):
`auth_jwt_secret` and `auth_jwt_previous_secret`, every PEM block of `auth_jwt_public_key`,
and the keys of `auth_jwks_url` (livecomments/jwks.py). A token's `kid` selects a JWKS key;
a token whose `kid` no JWKS key has, or that has none, is tried against the static keys of
its `alg` (a handful: at most one verification each).

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

Refusals are in our own words: PyJWT's messages ("Invalid header padding", …) describe its
parser, not what the client should do, and never reach a reply.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from livecomments.errors import ApiError
from livecomments.model import display_name

VERIFIED_CACHE_SIZE = 10_000  # tokens remembered as verified (~3 MB); the least recently used go first
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key is at least as long as the hash (256 bits)
REALM = 'Bearer realm="livecomments"'
MODERATOR = "moderator"
UNAUTHORIZED = "unauthorized"
TOKEN_EXPIRED = "token_expired"  # a good token past its exp: the client fetches a fresh one and comes back
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
LEEWAY_S = 30.0  # seconds of clock skew forgiven in exp, nbf and iat (see above)
MAX_SUB = 256  # characters of a token's sub: what a ban can name (OpenID Connect's own limit is 255 ASCII)
_PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z0-9 ]+-----.+?-----END [A-Z0-9 ]+-----", re.DOTALL)

# Why a token is refused, in our words, most specific first (InvalidSignatureError is a DecodeError).
REASONS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.DecodeError, "the token is malformed"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not accepted here"),
    (jwt.InvalidAudienceError, "the token is meant for another audience (aud)"),
    (jwt.InvalidIssuerError, "the token is from another issuer (iss)"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf)"),
    (jwt.InvalidIssuedAtError, "the token's issue time (iat) is not valid"),
)


class TokenKeyError(ValueError):
    """The configured key cannot verify tokens; the message is one line for the user."""


class Unauthorized(ApiError):
    def __init__(self, message: str, *, invalid: bool, code: str = UNAUTHORIZED) -> None:
        # RFC 6750 §3.1: no error attribute when the request carried no token at all.
        challenge = f'{REALM}, error="invalid_token", error_description="{message}"' if invalid else REALM
        super().__init__(401, code, message, {"WWW-Authenticate": challenge})


class TokenExpired(Unauthorized):
    """A token that verifies but is past its exp (+ leeway). Streams say it in band (edge/stream.py,
    edge/ws.py): an EventSource never retries a 401, and the client must learn to refresh."""

    def __init__(self) -> None:
        super().__init__("the token has expired", invalid=True, code=TOKEN_EXPIRED)


class _NoKeyMatches(Unauthorized):
    """No configured key matches the token: the one refusal a JWKS refresh may cure."""

    def __init__(self, message: str) -> None:
        super().__init__(message, invalid=True)


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str  # the user: what rate limits, bans and deletes key on
    author: str  # what comments show: the token's `name`, else `sub`
    moderator: bool
    expires: float = math.inf  # the token's exp + leeway (epoch seconds): a socket's later posts check it


@dataclass(frozen=True, slots=True)
class Key:
    key: Any  # the HS256 secret (bytes) or a cryptography public key
    algorithm: str  # the one algorithm it verifies
    kid: str | None = None  # JWKS keys only


class KeySource(Protocol):
    """Keys fetched from elsewhere, by kid (livecomments/jwks.py)."""

    def get(self, kid: str) -> Key | None: ...
    def all(self) -> tuple[Key, ...]: ...
    async def refresh_for(self, kid: str) -> None: ...  # bounded in time and rate; never raises


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


def _secret_key(name: str, secret: str) -> Key:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise TokenKeyError(f"{name} must be at least {MIN_SECRET_BYTES} bytes")
    return Key(secret.encode(), "HS256")


def load_keys(secret: str, public_key: str, previous_secret: str = "") -> tuple[Key, ...]:
    """The static keys configured; () when none is (open posting, unless a JWKS URL is set).
    `auth_jwt_public_key` may hold several PEM blocks (a bundle, as CA files do): each verifies."""
    if secret and public_key:
        raise TokenKeyError("set auth_jwt_secret or auth_jwt_public_key, not both")
    if previous_secret and not secret:
        raise TokenKeyError("auth_jwt_previous_secret is the key before auth_jwt_secret: set auth_jwt_secret too")
    if secret:
        previous = (_secret_key("auth_jwt_previous_secret", previous_secret),) if previous_secret else ()
        return (_secret_key("auth_jwt_secret", secret), *previous)
    if not public_key:
        return ()
    blocks = _PEM_BLOCK.findall(_read_pem(public_key))
    keys = []
    for pem in blocks:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise TokenKeyError("auth_jwt_public_key holds something that is not a PEM public key") from None
        keys.append(Key(key, algorithm_of(key)))
    if not keys:
        raise TokenKeyError("auth_jwt_public_key is not a PEM public key")
    return tuple(keys)


class Authenticator:
    """Verifies tokens. A client posts many times with one token: a verified token is remembered
    (its exact bytes, so nothing unverified is ever trusted) until its `exp`: a full HS256
    verification costs a post ~100 µs of CPU, a remembered token next to nothing (benchmarks/auth_cost.py)."""

    def __init__(self, keys: tuple[Key, ...], *, fetched: KeySource | None = None, audience: str = "",
                 issuer: str = "", leeway: float = LEEWAY_S, max_author: int = 64,
                 cache_size: int = VERIFIED_CACHE_SIZE) -> None:
        self._keys = keys
        self._fetched = fetched
        self._leeway = leeway
        self._max_author = max_author
        self._audience = audience or None
        self._issuer = issuer or None
        self._verified: OrderedDict[str, Identity] = OrderedDict()
        self._cache_size = cache_size

    async def verify(self, token: str) -> Identity:
        """The token's identity, or Unauthorized (TokenExpired for a good token past its exp).
        Waits only when the token names a kid we do not have (a bounded JWKS fetch)."""
        remembered = self._verified.get(token)
        if remembered is not None:
            if time.time() < remembered.expires:  # PyJWT's rule: expired once exp + leeway <= now
                self._verified.move_to_end(token)
                return remembered
            del self._verified[token]
        identity = await self._decode(token)
        self._verified[token] = identity
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return identity

    async def _decode(self, token: str) -> Identity:
        if not token.isascii():  # a JWT is base64url and dots; PyJWT would fail encoding it (undecodable header bytes)
            raise Unauthorized("the token is malformed", invalid=True)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthorized("the token is malformed", invalid=True) from None
        kid, alg = header.get("kid"), header.get("alg")
        kid = kid if isinstance(kid, str) and kid else None
        try:
            claims = self._claims(token, self._candidates(kid, alg))
        except _NoKeyMatches:
            if self._fetched is None or kid is None or self._fetched.get(kid) is not None:
                raise
            await self._fetched.refresh_for(kid)  # perhaps the issuer's new key: a fetch bounded in time and rate
            claims = self._claims(token, self._candidates(kid, alg))
        return self._identity(claims)

    def _candidates(self, kid: str | None, alg: object) -> list[Key]:
        fetched = self._fetched
        if fetched is not None and kid is not None:
            chosen = fetched.get(kid)
            if chosen is not None:
                return [chosen]
        pool = self._keys if fetched is None or kid is not None else (*self._keys, *fetched.all())
        return [k for k in pool if k.algorithm == alg]

    def _claims(self, token: str, keys: list[Key]) -> dict[str, Any]:
        if not keys:
            raise _NoKeyMatches("the token's algorithm or key id (kid) is not accepted here")
        for key in keys:
            try:
                return self._checked(token, key, verify_exp=True)
            except jwt.InvalidSignatureError:
                continue  # another key may match
            except jwt.ExpiredSignatureError:
                self._checked_or_refused(token, key)  # every other claim must hold for "expired" to be the reason
                raise TokenExpired() from None
            except jwt.InvalidTokenError as e:
                raise Unauthorized(_reason(e), invalid=True) from None
        raise _NoKeyMatches(REASONS[0][1])

    def _checked_or_refused(self, token: str, key: Key) -> None:
        try:
            self._checked(token, key, verify_exp=False)
        except jwt.InvalidTokenError as e:
            raise Unauthorized(_reason(e), invalid=True) from None

    def _checked(self, token: str, key: Key, *, verify_exp: bool) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=[key.algorithm], audience=self._audience, issuer=self._issuer,
            leeway=self._leeway,
            options={"require": ["exp", "sub"], "verify_aud": self._audience is not None, "verify_exp": verify_exp},
        )
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        try:
            expires = float(claims["exp"]) + self._leeway  # PyJWT checked exp is an integer, not that it fits a float
        except OverflowError:
            raise Unauthorized("the token's exp is out of range", invalid=True) from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("the token's sub must be a non-empty string", invalid=True)
        if len(sub) > MAX_SUB:
            raise Unauthorized(f"the token's sub is longer than {MAX_SUB} characters", invalid=True)
        name = claims.get("name")
        roles = claims.get("roles")
        moderator = isinstance(roles, list) and MODERATOR in roles
        author = display_name(name if isinstance(name, str) and name else sub, self._max_author)
        return Identity(sub=sub, author=author, moderator=moderator, expires=expires)


def _reason(e: jwt.InvalidTokenError) -> str:
    """Our words for PyJWT's refusal: its own text names its parser's internals."""
    if isinstance(e, jwt.MissingRequiredClaimError) and e.claim in ("exp", "sub", "aud", "iss"):
        return f"the token has no {e.claim} claim"
    return next((reason for kind, reason in REASONS if isinstance(e, kind)), "the token is not valid")


def mint(key: Any, algorithm: str, *, sub: str, name: str = "", moderator: bool = False, ttl: float = 3600,
         audience: str = "", issuer: str = "", kid: str = "") -> str:
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
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)
