"""The Ed25519 keys users signs tokens with: files only users' own OS account can read, never rows
of a database every replica, backup and SQL client can read.

Layout, in the keys directory (0700; ``MICROSHOP_USERS_KEYS_DIR``, default ``<data dir>/keys/users``)::

    <kid>.pem    the private key, PKCS#8 (0600 from its first byte, never overwritten, never chmod-ed)
    <kid>.json   {"kid", "created_at", "signs_from"}: written last, so a key exists for readers once
                 its metadata does

A rotated key is published (in the JWKS) ``publish_ahead`` seconds before it signs: a verifier
fetches the JWKS again on an unknown kid at most every 5 s (chassis JwtVerifier), so by the time
a token carries the new kid every verifier's next fetch has it. The newest key whose time has come
signs. An older key stopped signing when its successor's did, so it verifies until every token
it signed has expired: successor's ``signs_from`` + the longest token TTL (+ a minute for clocks
and replicas still switching); then its files go.

Replicas on one shared directory: every signing and JWKS request re-reads the directory listing
(a few files), so a key created by one replica (start, rotation) signs everywhere at once. Two
replicas starting on an empty directory may both create a key: harmless, both are published, the
newest signs everywhere after the re-read, and the other retires like any rotated key.
"""

from __future__ import annotations

import asyncio
import json
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from microshop_chassis.auth import ALGORITHM, AUDIENCE, ISSUER
from microshop_chassis.private_files import create_private_file, make_private_dir, write_private_file

# Clocks of replicas differ a little, and a replica may sign once more while the new key appears.
RETIREMENT_LEEWAY_SECONDS = 60


class KeyFileError(RuntimeError):
    """The keys directory or a key file can be read by others than users' own account."""


@dataclass(frozen=True)
class TokenIssuer:
    kid: str
    private_key: Ed25519PrivateKey

    def issue(self, *, subject: str, role: str, ttl: int, email: str | None = None, name: str | None = None) -> str:
        now = int(time.time())
        claims = {"sub": subject, "role": role, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl}
        if email:
            claims["email"] = email
        if name:
            claims["name"] = name
        return jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created_at: float  # seconds since the epoch
    signs_from: float
    private_key: Ed25519PrivateKey

    def jwk(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private_key.public_key()))
        return {**public, "kid": self.kid, "use": "sig", "alg": ALGORITHM}


class SigningKeys:
    """The key files of one directory: the newest signs, the unexpired ones verify."""

    def __init__(self, directory: Path, *, max_token_ttl: int, publish_ahead: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.max_token_ttl = max_token_ttl
        self.publish_ahead = publish_ahead
        self._clock = clock
        self._loaded: dict[str, SigningKey] = {}  # parsed once per kid
        self._started = False

    async def load(self) -> None:
        """At start: the directory (created 0700 if missing), its files checked, a first key if none."""
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        make_private_dir(self.directory)
        _refuse_if_shared(self.directory)
        if not self._live_keys():
            self._create(signs_from=self._clock())  # nothing to wait for: no token of it is out yet
        self._started = True

    @property
    def issuer(self) -> TokenIssuer:
        """The newest key, re-read from the directory: another replica may have rotated."""
        if not self._started:
            raise RuntimeError("the signing keys are not loaded yet (SigningKeys.load runs at start)")
        now = self._clock()
        keys = [key for key in self._live_keys() if key.signs_from <= now]
        if not keys:  # every signing key was deleted by hand: start over rather than fail every login
            keys = [self._create(signs_from=now)]
        newest = keys[-1]
        return TokenIssuer(newest.kid, newest.private_key)

    def rotate(self) -> SigningKey:
        """A new key, published now, that signs from ``publish_ahead`` seconds on; the previous
        ones verify until their tokens have expired."""
        created = self._create(signs_from=self._clock() + self.publish_ahead)
        self._live_keys()  # retires what the rotation made expirable
        return created

    async def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self._live_keys()]}

    def _live_keys(self) -> list[SigningKey]:
        """Every key whose tokens may still be valid, oldest first; expired keys' files are deleted."""
        read = (self._read(path) for path in self.directory.glob("*.json"))
        keys = sorted((key for key in read if key is not None), key=lambda key: (key.signs_from, key.kid))
        now = self._clock()
        live = []
        for key, successor in zip(keys, keys[1:], strict=False):  # the newest has no successor: kept
            if now >= successor.signs_from + self.max_token_ttl + RETIREMENT_LEEWAY_SECONDS:
                self._delete(key.kid)
            else:
                live.append(key)
        return live + keys[-1:]

    def _read(self, metadata_path: Path) -> SigningKey | None:
        """The key of a metadata file, or None if another replica deleted it since the listing."""
        kid = metadata_path.stem
        known = self._loaded.get(kid)
        if known is not None:
            return known
        pem_path = metadata_path.with_suffix(".pem")
        try:
            for path in (metadata_path, pem_path):
                _refuse_if_shared(path)
            metadata = json.loads(metadata_path.read_text())
            pem = pem_path.read_bytes()
        except FileNotFoundError:
            return None
        private_key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise KeyFileError(f"{pem_path} is not an Ed25519 private key")
        key = SigningKey(kid, float(metadata["created_at"]), float(metadata["signs_from"]), private_key)
        self._loaded[kid] = key
        return key

    def _create(self, *, signs_from: float) -> SigningKey:
        key = SigningKey(uuid.uuid4().hex, self._clock(), signs_from, Ed25519PrivateKey.generate())
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if not create_private_file(self.directory / f"{key.kid}.pem", pem):  # a fresh kid: never there
            raise KeyFileError(f"a key file named {key.kid}.pem is already there")
        # The metadata goes last (and appears whole): a replica listing the directory never sees a
        # key whose private half is not written yet.
        metadata = {"kid": key.kid, "created_at": key.created_at, "signs_from": key.signs_from}
        write_private_file(self.directory / f"{key.kid}.json", json.dumps(metadata))
        self._loaded[key.kid] = key
        return key

    def _delete(self, kid: str) -> None:
        self._loaded.pop(kid, None)
        for suffix in (".json", ".pem"):  # metadata first: readers never find a key without its private half
            try:
                (self.directory / f"{kid}{suffix}").unlink()
            except FileNotFoundError:  # another replica deleted it first
                pass


def _refuse_if_shared(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{path} is accessible by group or others (mode {mode:04o}); users keeps private keys there. "
            f"Make it {'0700' if path.is_dir() else '0600'} (chmod) and check who may have read it."
        )
