"""Config fetch, session key and the reconfigure schedule (agent.md §3–§4, §6)."""

from __future__ import annotations

import http.client
import json
import logging
import random
import ssl
import urllib.parse
import urllib.request
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from pushjobs.agent.config import AgentConfig
from pushjobs.agent.proxy import Proxy, ProxyError, proxy_for
from pushjobs.protocol.chef_auth import sign_request
from pushjobs.protocol.compat import dataclass
from pushjobs.protocol.errors import ProtocolError
from pushjobs.protocol.keys import decrypt_session_key, load_public_key, z85_decode_key
from pushjobs.protocol.vocabulary import MediaType

log = logging.getLogger("pushjobs.agent")
FETCH_TIMEOUT = 5.0
PROTOCOL_VERSION = "3.0"
AGENT_VERSION = "0.1.0"
LIFETIME_WAIT_RECHECK = 5.0
SESSION_KEY_BYTES = 32


class FetchError(Exception):
    """A config fetch failed; `transient` failures are retried, others are permanent."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class ServerConfig:
    """The fields of the config document the agent uses (agent.md §4)."""

    out_addr: str
    command_addr: str
    interval: float
    offline_threshold: int
    online_threshold: int
    public_key: RSAPublicKey
    curve_public_key: str | None
    session_key: bytes
    lifetime: float
    max_message_skew: float
    incarnation_id: str
    max_output_bytes: int


def config_url(cfg: AgentConfig, curve_public: str, server_url: str | None = None) -> str:
    """`<server_url>/pushy/config/<node>?ccpk=<key>&version=3.0`."""
    node = urllib.parse.quote(cfg.node_name, safe="")
    ccpk = urllib.parse.quote(curve_public, safe="")
    base = server_url or cfg.server_url
    return f"{base}/pushy/config/{node}?ccpk={ccpk}&version={PROTOCOL_VERSION}"


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, list):
        return "; ".join(str(e) for e in error)
    if error is not None:
        return str(error)
    return body[:200].decode("utf-8", "replace").strip()


def fetch_config_document(
    cfg: AgentConfig, key: RSAPrivateKey, curve_public: str, server_url: str | None = None
) -> Any:
    """Blocking signed GET of the config document (run it in a worker thread)."""
    url = config_url(cfg, curve_public, server_url)
    parts = urllib.parse.urlsplit(url)
    shown = url.split("?", 1)[0]  # log lines name the URL without the long ccpk key
    headers = sign_request(
        method="GET", path=parts.path, body=b"", user_id=cfg.node_name, private_key=key
    )
    headers.update(
        {
            "Accept": MediaType.JSON,
            "User-Agent": f"pushjobs-agent/{AGENT_VERSION}",
            "Host": parts.netloc,
        }
    )
    try:
        proxy = proxy_for(url, urllib.request.getproxies_environment())
    except ProxyError as exc:
        raise FetchError(str(exc), transient=False) from None
    conn = _connection(cfg, parts, proxy)
    target = f"{parts.path}?{parts.query}"
    if proxy is not None:
        log.debug("config fetch through the proxy %s", proxy.shown)
        if parts.scheme == "http":  # a forwarding proxy takes the absolute URI
            target = f"http://{parts.netloc}{target}"
            if proxy.authorization is not None:
                headers["Proxy-Authorization"] = proxy.authorization
    try:
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        body = response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"cannot reach {shown}: {exc}", transient=True) from None
    finally:
        conn.close()
    if status != 200:
        transient = status >= 500 or status in (408, 429)
        raise FetchError(f"HTTP {status} from {shown}: {_error_text(body)}", transient=transient)
    try:
        return json.loads(body)
    except ValueError:
        raise FetchError(f"config from {shown} is not JSON", transient=False) from None


def _connection(
    cfg: AgentConfig, parts: urllib.parse.SplitResult, proxy: Proxy | None
) -> http.client.HTTPConnection:
    """A connection to the server, or to the proxy (HTTPS: a CONNECT tunnel through it)."""
    host = parts.hostname or ""
    if parts.scheme != "https":
        if proxy is not None:
            return http.client.HTTPConnection(proxy.host, proxy.port, timeout=FETCH_TIMEOUT)
        return http.client.HTTPConnection(host, parts.port, timeout=FETCH_TIMEOUT)
    context = ssl.create_default_context(cafile=cfg.ca_file)
    if not cfg.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if proxy is None:
        return http.client.HTTPSConnection(host, parts.port, timeout=FETCH_TIMEOUT, context=context)
    # TLS (and its host name check) is with the server, inside the tunnel
    conn = http.client.HTTPSConnection(
        proxy.host, proxy.port, timeout=FETCH_TIMEOUT, context=context
    )
    tunnel_headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
    conn.set_tunnel(host, parts.port or 443, headers=tunnel_headers)
    return conn


class ServerRotation:
    """Which servers a config fetch tries, in which order (agent.md §4). Pure; monotonic times.

    Each fetch starts at a random entry and goes round the list once. A server that failed is
    left out until its own backoff (`jittered_backoff` of its consecutive failures) has passed,
    so a dead server of a cluster costs neither time nor requests while another one answers.
    With one URL this is the plain backoff between fetches.
    """

    def __init__(self, urls: tuple[str, ...], rng: random.Random | None = None) -> None:
        self.urls = urls
        self.rng = rng or random.Random()
        self.failures = dict.fromkeys(urls, 0)
        self.ready_at = dict.fromkeys(urls, 0.0)

    def order(self, now: float) -> list[str]:
        """The servers to try now, from a random start; empty while all are backing off."""
        start = self.rng.randrange(len(self.urls))
        rotated = self.urls[start:] + self.urls[:start]
        return [url for url in rotated if self.ready_at[url] <= now]

    def failed(self, url: str, now: float) -> None:
        self.failures[url] += 1
        self.ready_at[url] = now + jittered_backoff(self.failures[url], self.rng)

    def succeeded(self, url: str) -> None:
        self.failures[url] = 0
        self.ready_at[url] = 0.0

    def wait(self, now: float) -> float:
        """Seconds until some server may be tried again."""
        return max(0.0, min(self.ready_at.values()) - now)


async def fetch_config(
    cfg: AgentConfig, key: RSAPrivateKey, curve_public: str, rotation: ServerRotation
) -> tuple[Any, str]:
    """(document, server URL): the signed config GET in a worker thread (fail-fast: one attempt
    per server, 5 s timeouts), over the servers `rotation` allows now; it moves to the next one
    while a server cannot be reached or answers 5xx. The first document wins; a 4xx ends the
    attempt. The caller reports the document's fate to `rotation` (`succeeded`/`failed`)."""
    urls = rotation.order(trio.current_time())
    if not urls:
        raise FetchError("every server is backing off", transient=True)
    failure: FetchError | None = None
    for url in urls:
        try:
            doc = await trio.to_thread.run_sync(
                fetch_config_document, cfg, key, curve_public, url, abandon_on_cancel=True
            )
        except FetchError as exc:
            rotation.failed(url, trio.current_time())
            if not exc.transient or len(urls) == 1:
                raise
            failure = exc
            log.info("%s; trying the next server", exc)
            continue
        return doc, url
    assert failure is not None
    raise failure


def _field(doc: dict[str, Any], path: str, kind: type | tuple[type, ...]) -> Any:
    value: Any = doc
    for name in path.split("."):
        if not isinstance(value, dict) or name not in value:
            raise FetchError(f"config document lacks '{path}'", transient=False)
        value = value[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FetchError(f"config document field '{path}' has the wrong type", transient=False)
    return value


def parse_config(
    doc: Any, *, node: str, key: RSAPrivateKey, allow_unencrypted: bool
) -> ServerConfig:
    """Check and decode the config document (agent.md §3 step 6, §4); FetchError(permanent)."""
    if not isinstance(doc, dict):
        raise FetchError("config document is not a JSON object", transient=False)
    versions = doc.get("protocol_versions")
    if not isinstance(versions, list) or PROTOCOL_VERSION not in versions:
        raise FetchError(
            "server does not support protocol 3.0 (is it a Chef Push Jobs server?)",
            transient=False,
        )
    curve = doc.get("curve_public_key")
    if curve is None and not allow_unencrypted:
        raise FetchError(
            "server offers no CURVE key (encryption is disabled on the server); "
            "set allow_unencrypted = true to connect anyway",
            transient=False,
        )
    if curve is not None:
        try:
            z85_decode_key(curve)
        except ProtocolError:
            raise FetchError("config document has an invalid curve_public_key", False) from None
    encoded = doc.get("encoded_session_key")
    session_key = None
    if isinstance(encoded, dict) and isinstance(encoded.get("key"), str):
        try:
            session_key = decrypt_session_key(key, encoded["key"])
        except ProtocolError:
            session_key = None
        # RSA PKCS#1 v1.5 decryption with the wrong key may "succeed" with random bytes
        # (implicit rejection); the server's session keys are always 32 bytes.
        if session_key is not None and len(session_key) != SESSION_KEY_BYTES:
            session_key = None
    if session_key is None:
        raise FetchError(
            f"server returned no usable session key for '{node}': "
            f"is client_key the key of client '{node}'?",
            transient=False,
        )
    try:
        public_key = load_public_key(_field(doc, "public_key", str))
    except ProtocolError:
        raise FetchError("config document has an invalid public_key", False) from None
    number = (int, float)
    config = ServerConfig(
        out_addr=_field(doc, "push_jobs.heartbeat.out_addr", str),
        command_addr=_field(doc, "push_jobs.heartbeat.command_addr", str),
        interval=float(_field(doc, "push_jobs.heartbeat.interval", number)),
        offline_threshold=_field(doc, "push_jobs.heartbeat.offline_threshold", int),
        online_threshold=_field(doc, "push_jobs.heartbeat.online_threshold", int),
        public_key=public_key,
        curve_public_key=curve,
        session_key=session_key,
        lifetime=float(_field(doc, "lifetime", number)),
        max_message_skew=float(_field(doc, "max_message_skew", number)),
        incarnation_id=_field(doc, "incarnation_id", str),
        max_output_bytes=_field(doc, "max_output_bytes", int),
    )
    if config.interval <= 0 or config.lifetime <= 0 or config.max_output_bytes < 0:
        raise FetchError("config document has out-of-range timing or size fields", False)
    return config


def backoff_delay(failures: int, u: float) -> float:
    """`min(120, 5 × 2^(n−1)) × u` after the n-th consecutive failure (agent.md §6.3)."""
    n = max(1, failures)
    return min(120.0, 5.0 * 2.0 ** min(n - 1, 16)) * u


def jittered_backoff(failures: int, rng: random.Random) -> float:
    """`backoff_delay` with full jitter, `u` uniform in [0, 1]: agents that failed together
    retry spread evenly over the whole window instead of together at its end."""
    return backoff_delay(failures, rng.uniform(0.0, 1.0))


class ReconfigureSchedule:
    """When the next full reconfigure runs and why (agent.md §6.2). Pure; times are monotonic.

    Two kinds of pending reconfigure: the lifetime deadline (waits for an idle runner) and an
    "urgent" time (the earliest of every other trigger, never waits).
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.lifetime_deadline: float | None = None
        self.urgent_at: float | None = None
        self.urgent_reason: str | None = None
        self.failures = 0
        self.known_incarnation: str | None = None
        self.scheduled_incarnation: str | None = None
        self.delay_logged = False

    def request(self, at: float, reason: str) -> None:
        """Ask for a reconfigure no later than `at`."""
        if self.urgent_at is None or at < self.urgent_at:
            self.urgent_at = at
            self.urgent_reason = reason

    def trigger_now(self, now: float, reason: str) -> None:
        self.request(now, reason)

    def on_new_incarnation(self, incarnation: str, now: float, interval: float) -> bool:
        """A verified server heartbeat names `incarnation`; True when that schedules a run."""
        if incarnation in (self.known_incarnation, self.scheduled_incarnation):
            return False
        self.scheduled_incarnation = incarnation
        self.request(
            now + self.rng.uniform(0.0, max(0.0, interval)),
            f"server restarted (new incarnation {incarnation})",
        )
        return True

    def on_send_failure(self, now: float) -> None:
        self.request(now + 60.0 * (1.0 - self.rng.random()), "send failure")

    def on_connection_abandoned(self, now: float, interval: float, reason: str) -> None:
        """libzmq dropped a connection for good (a protocol error such as an oversized message):
        reconfigure within one heartbeat interval, jittered across a fleet."""
        self.request(now + self.rng.uniform(0.0, max(0.0, interval)), reason)

    def begin(self) -> str:
        """A run starts now: consume the pending triggers; return the reason."""
        reason = self.urgent_reason or "config lifetime expired"
        self.urgent_at = None
        self.urgent_reason = None
        self.lifetime_deadline = None
        self.delay_logged = False
        return reason

    def on_success(self, now: float, lifetime: float, incarnation: str) -> None:
        self.failures = 0
        self.lifetime_deadline = now + lifetime * (1.0 - 0.1 * self.rng.random())
        self.known_incarnation = incarnation
        if self.scheduled_incarnation != incarnation:
            self.scheduled_incarnation = None

    def on_failure(self, now: float, delay: float | None = None) -> float:
        """Record a failed fetch; return the delay before the next attempt (`delay`, e.g. until
        a server of the rotation may be tried again, else the backoff of this many failures)."""
        self.failures += 1
        if delay is None:
            delay = jittered_backoff(self.failures, self.rng)
        self.request(now + delay, f"retry after {self.failures} failed config fetch(es)")
        # The failed run consumed the lifetime deadline; keep the periodic rule alive.
        return delay

    def due(self, now: float, runner_idle: bool) -> tuple[str | None, bool]:
        """(reason, delaying): the reason when a run is due now; `delaying` is True the first
        time the lifetime deadline passes while a job is in flight (log it once)."""
        if self.urgent_at is not None and now >= self.urgent_at:
            return self.urgent_reason, False
        if self.lifetime_deadline is not None and now >= self.lifetime_deadline:
            if runner_idle:
                return "config lifetime expired", False
            first = not self.delay_logged
            self.delay_logged = True
            return None, first
        return None, False

    def next_check(self, now: float, runner_idle: bool) -> float | None:
        """The next time `due` may change (ignoring new triggers)."""
        times = []
        if self.urgent_at is not None:
            times.append(self.urgent_at)
        if self.lifetime_deadline is not None:
            if now >= self.lifetime_deadline and not runner_idle:
                times.append(now + LIFETIME_WAIT_RECHECK)
            else:
                times.append(self.lifetime_deadline)
        return min(times) if times else None
