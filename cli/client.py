"""Signed HTTP requests to the pushjobs server (and a Chef Server for searches).

Every request is signed with Chef `X-Ops-*` headers over the exact path and body sent
(http-api.md §4). HTTP errors become `ERROR: <status> <reason>: <texts>` (cli.md §10);
network errors `ERROR: cannot reach <url>: <reason>`.
"""

from __future__ import annotations

import http
import json
import logging
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

from pushjobs.cli.errors import RequestError, UsageError
from pushjobs.cli.settings import Settings
from pushjobs.protocol.version import installed_version
from pushjobs.protocol.vocabulary import MediaType

log = logging.getLogger("pushjobs.cli")

V1_HINT = "(the server rejected a job option; is it a Chef Push Jobs 1.x server?)"
ORG_URL_HINT = (
    "(server_url must be the organization URL, like https://push.example.com/organizations/ORG)"
)
# SSE streams get a keep-alive every 15 s, so a minute without a byte means a dead connection.
TIMEOUT = httpx.Timeout(60.0, connect=15.0)


class HttpError(RequestError):
    """A non-2xx answer; `texts` are the server's error texts."""

    def __init__(self, status: int, reason: str, texts: list[str], hint: str | None = None) -> None:
        self.status = status
        self.reason = reason
        self.texts = texts
        message = format_http_error(status, reason, texts)
        super().__init__(f"{message} {hint}" if hint else message)


class NetworkError(RequestError):
    """The server could not be reached or the connection broke."""


def error_texts(body: bytes) -> list[str]:
    """The error texts of an error body: the JSON `error` member, else the first 200 characters."""
    text = body.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "error" in doc:
        err = doc["error"]
        if isinstance(err, list):
            return [e if isinstance(e, str) else json.dumps(e) for e in err]
        return [err if isinstance(err, str) else json.dumps(err)]
    text = text.strip()
    return [text[:200]] if text else []


def format_http_error(status: int, reason: str, texts: list[str]) -> str:
    """`<status> <reason>: <texts joined by "; ">` plus the 1.x hint for `invalid key supplied`."""
    message = f"{status} {reason}"
    if texts:
        message += ": " + "; ".join(texts)
    if status == 400 and "invalid key supplied" in texts:
        message += " " + V1_HINT
    return message


def is_org_url(url: str) -> bool:
    """Whether `url`'s path ends in `/organizations/<name>`, as a server_url must."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    return len(segments) >= 2 and segments[-2] == "organizations"


def reason_phrase(response: httpx.Response) -> str:
    """The response's reason phrase, or the standard one for its status."""
    if response.reason_phrase:
        return response.reason_phrase
    try:
        return http.HTTPStatus(response.status_code).phrase
    except ValueError:
        return ""


def load_signing_key(settings: Settings) -> Any:
    """Load the private key named by `settings.key` (a path or inline PEM)."""
    from pushjobs.protocol.errors import ProtocolError
    from pushjobs.protocol.keys import load_private_key

    if settings.key.lstrip().startswith("-----BEGIN"):
        pem, where = settings.key.encode(), "the inline key"
    else:
        path = Path(settings.key)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"key file {path} not found") from None
        except OSError as e:
            raise UsageError(f"cannot read key file {path}: {e.strerror or e}") from None
        where = f"key file {path}"
    try:
        return load_private_key(pem)
    except (ProtocolError, ValueError) as e:
        raise UsageError(f"{where} is not a usable RSA private key: {e}") from None


def tls_verify(settings: Settings) -> bool | ssl.SSLContext:
    """The httpx `verify` value for the TLS settings."""
    if not settings.verify_tls:
        return False
    if settings.ca_file:
        try:
            return ssl.create_default_context(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise UsageError(f"cannot load CA file {settings.ca_file}: {e}") from None
    return True


Params = Mapping[str, str] | Sequence[tuple[str, str]]


def with_query(url: str, params: Params | None) -> str:
    """`url` with an encoded query string (pairs may repeat a name: `node=a&node=b`)."""
    return f"{url}?{urlencode(params)}" if params else url


def segment(value: str) -> str:
    """One percent-encoded path segment (node names may contain `:` and `.`)."""
    return quote(value, safe=":@!$&'()*+,;=-._~")


class SignedClient:
    """A synchronous httpx client that signs every request as `settings.user`."""

    def __init__(
        self,
        settings: Settings,
        private_key: Any,
        *,
        verbose: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.key = private_key
        self.verbose = verbose
        self.http = httpx.Client(
            verify=tls_verify(settings),
            timeout=TIMEOUT,
            headers={"User-Agent": f"pushjobs-cli/{installed_version()}"},
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SignedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def org_url_ok(self) -> bool:
        return is_org_url(self.settings.server_url)

    def push_url(self, rel: str) -> str:
        """`<server_url>/pushy/<rel>`."""
        return f"{self.settings.server_url}/pushy/{rel}"

    def _build(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> httpx.Request:
        from pushjobs.protocol.chef_auth import sign_request
        from pushjobs.protocol.errors import ProtocolError

        request = self.http.build_request(method, url, content=body, headers=headers)
        path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        try:
            signed = sign_request(
                method=method,
                path=path,
                body=body,
                user_id=self.settings.user,
                private_key=self.key,
                version=self.settings.sign_version,
            )
        except ProtocolError as e:
            raise UsageError(
                f"cannot sign requests with the key of {self.settings.user}: {e}"
            ) from None
        request.headers.update(signed)
        return request

    def send(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        accept: str = MediaType.JSON,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        base: str | None = None,
    ) -> httpx.Response:
        """Send a signed request; HttpError for a non-2xx answer, NetworkError when unreachable."""
        all_headers = {"Accept": accept, **(headers or {})}
        if body and "Content-Type" not in all_headers:
            all_headers["Content-Type"] = MediaType.JSON
        request = self._build(method, url, body, all_headers)
        started = time.monotonic()
        try:
            response = self.http.send(request, stream=stream)
        except httpx.HTTPError as e:
            log.debug("%s %s -> %s", method, url, describe_network_error(e))
            raise NetworkError(
                f"cannot reach {base or self.settings.server_url}: {describe_network_error(e)}"
            ) from None
        log.debug(
            "%s %s -> %d (%.0f ms)",
            method,
            url,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        if response.status_code >= 300:
            try:
                raw = response.read()
            except httpx.HTTPError:
                raw = b""
            finally:
                response.close()
            texts = error_texts(raw)
            if response.status_code < 400 and response.headers.get("location"):
                # redirects are not followed: a signature covers one exact URL
                texts = [f"redirected to {response.headers['location']}; fix the URL setting"]
            hint = None
            if response.status_code == 404 and base is None and not self.org_url_ok:
                hint = ORG_URL_HINT  # e.g. the bare host, or ".../pushy" appended
            raise HttpError(response.status_code, reason_phrase(response), texts, hint)
        return response

    def get_json(self, rel: str, params: Params | None = None) -> Any:
        """GET `<server_url>/pushy/<rel>` and decode the JSON answer."""
        return self.get_json_response(rel, params)[1]

    def get_json_response(
        self, rel: str, params: Params | None = None
    ) -> tuple[httpx.Response, Any]:
        """GET `<server_url>/pushy/<rel>`: the response (for its headers) and the JSON answer."""
        url = with_query(self.push_url(rel), params)
        response = self.send("GET", url)
        return response, decode_json(response, url)

    def post_json(self, rel: str, obj: Any) -> tuple[httpx.Response, Any]:
        """POST `obj` as compact JSON (None → empty body) and decode the JSON answer."""
        url = self.push_url(rel)
        body = (
            b""
            if obj is None
            else json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        )
        response = self.send("POST", url, body=body)
        return response, decode_json(response, url)

    def get_bytes(self, rel: str) -> bytes:
        """GET a stored output channel as bytes."""
        return self.send("GET", self.push_url(rel), accept=MediaType.OCTET_STREAM).content

    @contextmanager
    def stream(
        self, url: str, accept: str, headers: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """Open a streaming GET; the response is closed on exit."""
        response = self.send("GET", url, accept=accept, headers=headers, stream=True)
        try:
            yield response
        finally:
            response.close()


def decode_json(response: httpx.Response, url: str) -> Any:
    """The JSON body of `response`; RequestError when it is not JSON."""
    try:
        return json.loads(response.content)
    except ValueError:
        raise RequestError(
            f"invalid response from {url}: expected JSON, got "
            f"{response.headers.get('content-type', 'no content type')}"
        ) from None


def describe_network_error(e: httpx.HTTPError) -> str:
    """A short reason for a transport error."""
    text = str(e).strip()
    if isinstance(e, httpx.TimeoutException):
        return text or "timed out"
    return text or type(e).__name__
