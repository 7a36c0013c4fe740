"""Chef `X-Ops-*` request signing and verification, versions 1.0, 1.1 and 1.3 (http-api.md §4)."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.hashes import SHA256

from .b64 import b64decode_strict, b64encode
from .compat import dataclass
from .errors import ChefAuthError, TimestampError
from .limits import HTTP_MAX_SKEW
from .signing import rsa_private_encrypt, rsa_public_recover
from .timestamps import format_xops_timestamp, parse_xops_timestamp

# version → the only algorithm allowed for it (also the default)
SIGN_VERSIONS = {"1.0": "sha1", "1.1": "sha1", "1.3": "sha256"}
REQUIRED_HEADERS = ("X-Ops-UserId", "X-Ops-Timestamp", "X-Ops-Sign", "X-Ops-Content-Hash")
WWW_AUTHENTICATE = 'X-Ops-Sign version="1.0" version="1.1"'
UNSUPPORTED_VERSION = "Unsupported authentication protocol version"

_SLASHES = re.compile(r"/+")
_DECIMAL = re.compile(r"[0-9]+", re.ASCII)


@dataclass
class AuthHeaders:
    user_id: str
    timestamp: str
    sign_version: str
    content_hash: str
    signature: bytes | None
    server_api_version: str | None


def canonical_path(path: str) -> str:
    """Path without query, runs of `/` collapsed, trailing `/` dropped unless the path is `/`."""
    path = path.split("?", 1)[0]
    path = _SLASHES.sub("/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


def _digest(algorithm: str, data: bytes) -> str:
    return b64encode(hashlib.new(algorithm, data).digest())


def _canonical_string(
    version: str,
    method: str,
    path: str,
    content_hash: str,
    timestamp: str,
    user_id: str,
    server_api_version: str,
) -> bytes:
    cpath = canonical_path(path)
    if version == "1.3":
        lines = [
            f"Method:{method.upper()}",
            f"Path:{cpath}",
            f"X-Ops-Content-Hash:{content_hash}",
            "X-Ops-Sign:version=1.3",
            f"X-Ops-Timestamp:{timestamp}",
            f"X-Ops-UserId:{user_id}",
            f"X-Ops-Server-API-Version:{server_api_version}",
        ]
    else:
        uid = _digest("sha1", user_id.encode("utf-8")) if version == "1.1" else user_id
        lines = [
            f"Method:{method.upper()}",
            f"Hashed Path:{_digest('sha1', cpath.encode('utf-8'))}",
            f"X-Ops-Content-Hash:{content_hash}",
            f"X-Ops-Timestamp:{timestamp}",
            f"X-Ops-UserId:{uid}",
        ]
    return "\n".join(lines).encode("utf-8")


def canonical_request(
    *,
    method: str,
    path: str,
    body: bytes,
    user_id: str,
    timestamp: str,
    version: str,
    server_api_version: str | None = None,
) -> bytes:
    """The exact bytes a Chef request signature covers (§4.4)."""
    if version not in SIGN_VERSIONS:
        raise ChefAuthError(400, UNSUPPORTED_VERSION)
    content_hash = _digest(SIGN_VERSIONS[version], body)
    api = server_api_version if server_api_version is not None else "0"
    return _canonical_string(version, method, path, content_hash, timestamp, user_id, api)


def sign_request(
    *,
    method: str,
    path: str,
    body: bytes,
    user_id: str,
    private_key: RSAPrivateKey,
    version: str = "1.3",
    timestamp: str | None = None,
    server_api_version: str | None = None,
) -> dict[str, str]:
    """Return the `X-Ops-*` headers signing this request (Server-API-Version only when given)."""
    if version not in SIGN_VERSIONS:
        raise ChefAuthError(400, UNSUPPORTED_VERSION)
    algorithm = SIGN_VERSIONS[version]
    if timestamp is None:
        timestamp = format_xops_timestamp(time.time())
    content_hash = _digest(algorithm, body)
    api = server_api_version if server_api_version is not None else "0"
    canonical = _canonical_string(version, method, path, content_hash, timestamp, user_id, api)
    if version == "1.3":
        signature = private_key.sign(canonical, PKCS1v15(), SHA256())
    else:
        signature = rsa_private_encrypt(private_key, canonical)
    encoded = b64encode(signature)
    headers = {
        "X-Ops-Sign": f"algorithm={algorithm};version={version};",
        "X-Ops-Userid": user_id,
        "X-Ops-Timestamp": timestamp,
        "X-Ops-Content-Hash": content_hash,
    }
    for i in range(0, len(encoded), 60):
        headers[f"X-Ops-Authorization-{i // 60 + 1}"] = encoded[i : i + 60]
    if server_api_version is not None:
        headers["X-Ops-Server-API-Version"] = server_api_version
    return headers


def _parse_sign_description(value: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        key, _, val = part.partition("=")
        parts[key.strip()] = val.strip()
    return parts


def validate_auth_headers(headers: Mapping[str, str], now: float) -> AuthHeaders:
    """Run §4.2 on lower-case-keyed headers; raise ChefAuthError(400|401, text) on failure."""

    def get(name: str) -> str | None:
        value = headers.get(name.lower())
        return value if isinstance(value, str) and value != "" else None

    missing = [name for name in REQUIRED_HEADERS if get(name) is None]
    if missing:
        names = ", ".join(f"'{name}'" for name in missing)
        raise ChefAuthError(400, f"missing required authentication header(s) {names}")
    user_id = get("X-Ops-UserId")
    timestamp = get("X-Ops-Timestamp")
    sign = get("X-Ops-Sign")
    content_hash = get("X-Ops-Content-Hash")
    assert user_id is not None and timestamp is not None
    assert sign is not None and content_hash is not None

    try:
        ts = parse_xops_timestamp(timestamp)
    except TimestampError:
        raise ChefAuthError(401, "bad header(s) 'X-Ops-Timestamp'") from None
    if not abs(now - ts) < HTTP_MAX_SKEW:
        raise ChefAuthError(
            401, f"Failed to authenticate as {user_id}. Synchronize the clock on your host."
        )

    description = _parse_sign_description(sign)
    version = description.get("version")
    if version not in SIGN_VERSIONS:
        raise ChefAuthError(400, UNSUPPORTED_VERSION)
    algorithm = description.get("algorithm")
    if algorithm is not None and algorithm != SIGN_VERSIONS[version]:
        raise ChefAuthError(400, UNSUPPORTED_VERSION)

    lines = []
    index = 1
    while (line := get(f"X-Ops-Authorization-{index}")) is not None:
        lines.append(line)
        index += 1
    signature = b64decode_strict("".join(lines)) if lines else None

    return AuthHeaders(
        user_id=user_id,
        timestamp=timestamp,
        sign_version=version,
        content_hash=content_hash,
        signature=signature or None,
        server_api_version=get("X-Ops-Server-API-Version"),
    )


def verify_request(
    auth: AuthHeaders, *, method: str, path: str, body: bytes, public_key: RSAPublicKey
) -> bool:
    """§4.5 step 4 for one candidate key: content hash, API version and signature all check out."""
    version = auth.sign_version
    if not auth.signature or version not in SIGN_VERSIONS:
        return False
    content_hash = _digest(SIGN_VERSIONS[version], body)
    if not hmac.compare_digest(content_hash.encode(), auth.content_hash.encode("utf-8", "replace")):
        return False
    api = "0"
    if version == "1.3" and auth.server_api_version is not None:
        if not _DECIMAL.fullmatch(auth.server_api_version):
            return False
        api = auth.server_api_version
    try:
        canonical = _canonical_string(
            version, method, path, content_hash, auth.timestamp, auth.user_id, api
        )
    except UnicodeEncodeError:
        return False
    if version == "1.3":
        try:
            public_key.verify(auth.signature, canonical, PKCS1v15(), SHA256())
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True
    recovered = rsa_public_recover(public_key, auth.signature)
    return recovered is not None and hmac.compare_digest(recovered, canonical)
