"""JWTs for the end-to-end tests, made with PyJWT: the HS256 secret, issuer and audience the test brokers are
configured with, and a token maker with every claim adjustable."""

from __future__ import annotations

import time
import uuid

import jwt

SECRET = "e2e-secret-" + uuid.uuid4().hex + uuid.uuid4().hex
ISSUER = "auth.e2e"
AUDIENCE = "switchyard-e2e"
ALLOW_TOKEN = "allow-" + uuid.uuid4().hex
EVERYTHING = {"all": ["/*"]}


def token(key=SECRET, algorithm="HS256", expires_in: float = 60, not_before: float | None = None,
          permissions: dict | None = None, issuer: str | None = ISSUER, audience: str | None = AUDIENCE,
          **extra) -> str:
    now = time.time()
    claims: dict = {"exp": int(now + expires_in) if expires_in >= 5 else now + expires_in, **extra}
    if not_before is not None:
        claims["nbf"] = int(now + not_before)
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    if permissions is not None:
        claims["permissions"] = permissions
    return jwt.encode(claims, key, algorithm=algorithm)
