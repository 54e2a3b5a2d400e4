"""API2:2023 Broken authentication: only a complete token that users signed with a key it
publishes is accepted. Each forged token below is signed with users' real key (or crafted
around it) and differs from a good one in one respect, so its refusal is due to that respect.
Checked through the gateway and on a service's own port: every service verifies for itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

pytestmark = pytest.mark.asyncio(loop_scope="session")

# (client, path) pairs that need a bearer token: users' own /me, and orders' list on its port.
TARGETS = {"gateway": ("gateway", "/api/users/me"), "orders port": ("orders", "/orders")}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)])


def _claims(secured, **changes) -> dict:
    now = int(time.time())
    return {"sub": secured.admin.id, "role": "admin", "iss": "microshop-users", "aud": "microshop",
            "iat": now, "exp": now + 300, **changes}


def forged_tokens(secured) -> dict[str, str]:
    kid, key = secured.signing_key()
    now = int(time.time())
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    hs256_header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    hs256_claims = _claims(secured)
    signing_input = ".".join([_b64(json.dumps(hs256_header).encode()), _b64(json.dumps(hs256_claims).encode())])
    stranger = Ed25519PrivateKey.generate()
    return {
        "expired": secured.forge(iat=now - 600, exp=now - 300),
        "without exp": secured.forge(drop=("exp",)),
        "without sub": secured.forge(drop=("sub",)),
        "with an empty sub": secured.forge(sub=""),
        "without iat": secured.forge(drop=("iat",)),
        "with an unknown role": secured.forge(role="superuser"),
        "from another issuer": secured.forge(iss="https://evil.example"),
        "for another audience": secured.forge(aud="another-api"),
        "with alg none": _unsigned({"alg": "none", "typ": "JWT", "kid": kid}, _claims(secured)),
        "HS256 keyed with the public key": signing_input + "." + _b64(
            hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()),
        "signed by an unknown key": jwt.encode(_claims(secured), stranger, algorithm="EdDSA",
                                               headers={"kid": "not-a-published-kid"}),
        "signed by another key under users' kid": jwt.encode(_claims(secured), stranger, algorithm="EdDSA",
                                                             headers={"kid": kid}),
        "malformed": "not.a.token",
    }


FORGERIES = ["expired", "without exp", "without sub", "with an empty sub", "without iat", "with an unknown role",
             "from another issuer", "for another audience", "with alg none", "HS256 keyed with the public key",
             "signed by an unknown key", "signed by another key under users' kid", "malformed"]


@pytest.mark.parametrize("target", TARGETS)
async def test_no_token_is_refused_with_a_bearer_challenge(secured, target):
    service, path = TARGETS[target]
    client = secured.gateway() if service == "gateway" else secured.direct(service)
    reply = await client.get(path)
    secured.assert_problem(reply, 401, "unauthorized")
    assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("forgery", FORGERIES)
async def test_a_forged_or_incomplete_token_is_refused(secured, forgery, target):
    token = forged_tokens(secured)[forgery]
    service, path = TARGETS[target]
    client = secured.gateway(token) if service == "gateway" else secured.direct(service, token)
    secured.assert_problem(await client.get(path), 401, "unauthorized")


async def test_the_good_token_the_forgeries_are_made_from_is_accepted(secured):
    """The control: a token forged with nothing missing passes, so each refusal above is due to its defect."""
    good = secured.forge()
    assert (await secured.gateway(good).get("/api/users/me")).status == 200
    assert (await secured.direct("orders", good).get("/orders")).status == 200
