"""Config document checks, reconfigure schedule, backoff, server liveness (agent.md §4, §6, §7)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pushjobs.agent.config import build_config
from pushjobs.agent.liveness import OFFLINE, QUIET, SEND, ServerLiveness
from pushjobs.agent.session import (
    FetchError,
    ReconfigureSchedule,
    ServerRotation,
    backoff_delay,
    config_url,
    jittered_backoff,
    parse_config,
)
from pushjobs.protocol.keys import (
    curve_keypair,
    encrypt_session_key,
    generate_rsa_key,
    public_key_pem,
)


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {"client": generate_rsa_key(), "other": generate_rsa_key(), "server": generate_rsa_key()}


def document(keys: dict[str, Any], **changes: Any) -> dict[str, Any]:
    doc = {
        "type": "config",
        "host": "h",
        "push_jobs": {
            "heartbeat": {
                "out_addr": "tcp://h:10000",
                "command_addr": "tcp://h:10002",
                "interval": 1.0,
                "offline_threshold": 3,
                "online_threshold": 2,
            }
        },
        "node": "web1",
        "organization": "acme",
        "public_key": public_key_pem(keys["server"]),
        "curve_public_key": curve_keypair()[0],
        "encoded_session_key": {
            "method": "hmac_sha256",
            "key": encrypt_session_key(keys["client"].public_key(), b"k" * 32),
        },
        "lifetime": 3600,
        "max_message_skew": 300,
        "max_body_size": 65536,
        "incarnation_id": "inc-1",
        "protocol_versions": ["2.0", "3.0"],
        "max_output_bytes": 1048576,
    }
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def parse(keys: dict[str, Any], doc: Any, allow_unencrypted: bool = False) -> Any:
    return parse_config(doc, node="web1", key=keys["client"], allow_unencrypted=allow_unencrypted)


def test_parse_good_document(keys: dict[str, Any]) -> None:
    cfg = parse(keys, document(keys))
    assert cfg.session_key == b"k" * 32
    assert cfg.interval == 1.0 and cfg.offline_threshold == 3 and cfg.online_threshold == 2
    assert cfg.out_addr == "tcp://h:10000" and cfg.command_addr == "tcp://h:10002"
    assert cfg.incarnation_id == "inc-1" and cfg.max_output_bytes == 1048576


def test_no_protocol_3(keys: dict[str, Any]) -> None:
    for versions in (["2.0"], None):
        with pytest.raises(FetchError, match=r"server does not support protocol 3\.0 \(is it a"):
            parse(keys, document(keys, protocol_versions=versions))


def test_no_curve_key(keys: dict[str, Any]) -> None:
    doc = document(keys, curve_public_key=None)
    with pytest.raises(FetchError, match="set allow_unencrypted = true to connect anyway"):
        parse(keys, doc)
    assert parse(keys, doc, allow_unencrypted=True).curve_public_key is None


def test_session_key_for_another_client(keys: dict[str, Any]) -> None:
    doc = document(
        keys,
        encoded_session_key={
            "method": "hmac_sha256",
            "key": encrypt_session_key(keys["other"].public_key(), b"k" * 32),
        },
    )
    with pytest.raises(FetchError) as info:
        parse(keys, doc)
    assert info.value.message == (
        "server returned no usable session key for 'web1': is client_key the key of client 'web1'?"
    )
    assert not info.value.transient
    with pytest.raises(FetchError, match="no usable session key"):
        parse(keys, document(keys, encoded_session_key=None))


@pytest.mark.parametrize("field", ["lifetime", "max_output_bytes", "incarnation_id", "public_key"])
def test_missing_field_is_permanent(keys: dict[str, Any], field: str) -> None:
    with pytest.raises(FetchError) as info:
        parse(keys, document(keys, **{field: None}))
    assert not info.value.transient


def test_mistyped_field(keys: dict[str, Any]) -> None:
    doc = document(keys)
    doc["push_jobs"]["heartbeat"]["interval"] = "10"
    with pytest.raises(FetchError, match="wrong type"):
        parse(keys, doc)


def test_config_url_quotes_node_and_key() -> None:
    cfg = build_config({"server_url": "http://h:1/organizations/o", "node_name": "a b/c"})
    url = config_url(cfg, "ab+/=c")
    assert url == "http://h:1/organizations/o/pushy/config/a%20b%2Fc?ccpk=ab%2B%2F%3Dc&version=3.0"


# ---- backoff and schedule ----------------------------------------------------------------------


def test_backoff_sequence() -> None:
    assert [backoff_delay(n, 1.0) for n in range(1, 9)] == [5, 10, 20, 40, 80, 120, 120, 120]
    assert backoff_delay(1, 0.9) == pytest.approx(4.5)
    assert backoff_delay(1000, 1.0) == 120


def schedule() -> ReconfigureSchedule:
    s = ReconfigureSchedule(random.Random(7))
    s.on_success(0.0, 100.0, "inc-1")
    return s


def test_lifetime_deadline_with_splay() -> None:
    s = schedule()
    assert s.lifetime_deadline is not None and 90.0 < s.lifetime_deadline <= 100.0
    assert s.due(50.0, True) == (None, False)
    assert s.due(100.0, True) == ("config lifetime expired", False)


def test_lifetime_waits_for_idle_runner_and_logs_once() -> None:
    s = schedule()
    assert s.due(100.0, False) == (None, True)
    assert s.due(101.0, False) == (None, False)
    assert s.next_check(101.0, False) == 106.0
    assert s.due(106.0, True)[0] == "config lifetime expired"


def test_immediate_triggers_do_not_wait_for_idle() -> None:
    s = schedule()
    s.trigger_now(10.0, "server offline")
    assert s.due(10.0, False) == ("server offline", False)
    assert s.begin() == "server offline"
    assert s.due(10.0, False) == (None, False)


def test_triggers_merge_into_one_run() -> None:
    s = schedule()
    s.trigger_now(10.0, "SIGUSR1")
    s.trigger_now(10.0, "watchdog")
    s.begin()
    assert s.urgent_at is None  # both consumed by one run


def test_new_incarnation_after_random_delay_once_per_value() -> None:
    s = schedule()
    assert not s.on_new_incarnation("inc-1", 5.0, 10.0)  # the known one
    assert s.on_new_incarnation("inc-2", 5.0, 10.0)
    assert s.urgent_at is not None and 5.0 <= s.urgent_at < 15.0
    assert not s.on_new_incarnation("inc-2", 6.0, 10.0)
    s.begin()
    s.on_success(20.0, 100.0, "inc-2")
    assert not s.on_new_incarnation("inc-2", 21.0, 10.0)


def test_send_failure_moves_deadline_never_later() -> None:
    s = schedule()
    s.on_send_failure(10.0)
    first = s.urgent_at
    assert first is not None and 10.0 < first <= 70.0
    s.on_send_failure(11.0)
    assert s.urgent_at is not None and s.urgent_at <= first
    s.trigger_now(12.0, "SIGUSR1")
    s.on_send_failure(13.0)
    assert s.urgent_at == 12.0


def test_abandoned_connection_reconfigures_within_one_interval() -> None:
    s = schedule()
    s.on_connection_abandoned(50.0, 10.0, "command connection abandoned")
    assert s.urgent_at is not None and 50.0 <= s.urgent_at <= 60.0
    assert s.begin() == "command connection abandoned"


def test_failure_backoff_and_reset() -> None:
    s = schedule()
    s.begin()
    tops = [5, 10, 20, 40, 80, 120, 120]
    delays = [s.on_failure(0.0) for _ in tops]
    for d, top in zip(delays, tops):
        assert 0.0 <= d <= top
    s.on_success(1.0, 100.0, "inc-1")
    assert s.failures == 0


@pytest.mark.parametrize("failures", [1, 3, 8])
def test_backoff_is_full_jitter_over_the_whole_window(failures: int) -> None:
    """A fleet that failed at the same moment retries spread evenly over [0, backoff], not in a
    narrow band at its end (agent.md §6.3)."""
    top = backoff_delay(failures, 1.0)
    rng = random.Random(11)
    delays = [jittered_backoff(failures, rng) for _ in range(4000)]
    assert all(0.0 <= d <= top for d in delays)
    tenths = [0] * 10
    for d in delays:
        tenths[min(9, int(10 * d / top))] += 1
    assert min(tenths) > 300  # every tenth of the window gets its share (400 expected)


def test_schedule_and_rotation_back_off_with_full_jitter() -> None:
    s = ReconfigureSchedule(random.Random(3))
    rotation = ServerRotation(("a",), random.Random(5))
    schedule_delays, rotation_delays = [], []
    for _ in range(500):
        s.failures = 0
        schedule_delays.append(s.on_failure(0.0))
        rotation.succeeded("a")
        rotation.failed("a", 0.0)
        rotation_delays.append(rotation.wait(0.0))
    for delays in (schedule_delays, rotation_delays):
        assert min(delays) < 0.5 and max(delays) > 4.5 and max(delays) <= 5.0


def test_new_incarnation_beats_the_backoff() -> None:
    s = schedule()
    s.begin()
    for _ in range(6):
        s.on_failure(0.0)
        s.begin()
    s.on_failure(100.0)  # next attempt ~ 100 + 120
    s.on_new_incarnation("inc-9", 101.0, 1.0)
    assert s.urgent_at is not None and s.urgent_at < 102.0


# ---- liveness ----------------------------------------------------------------------------------


def test_liveness_offline_after_threshold() -> None:
    live = ServerLiveness(offline_threshold=3, online_threshold=2)
    assert [live.tick() for _ in range(4)] == [SEND] * 4
    assert live.tick() == OFFLINE
    assert live.tick() == QUIET


def test_liveness_heartbeat_resets_counter() -> None:
    live = ServerLiveness(3, 2)
    for _ in range(10):
        assert live.tick() == SEND
        live.heard()


def test_liveness_back_online_after_threshold() -> None:
    live = ServerLiveness(3, 2)
    for _ in range(5):
        live.tick()
    assert not live.online
    assert [live.heard() for _ in range(3)] == [False, False, True]
    assert live.tick() == SEND


# ---- server rotation (server_urls) ----------------------------------------------------------


class _FixedRng(random.Random):
    """Starts every round at entry `start`; no jitter."""

    def __init__(self, start: int) -> None:
        super().__init__(0)
        self.start = start

    def randrange(self, *args: Any, **kwargs: Any) -> int:  # type: ignore[override]
        return self.start

    def uniform(self, a: float, b: float) -> float:
        return 1.0


def test_rotation_starts_at_a_random_entry_and_goes_round_once() -> None:
    urls = ("a", "b", "c")
    assert ServerRotation(urls, _FixedRng(1)).order(0.0) == ["b", "c", "a"]
    starts = {ServerRotation(urls).order(0.0)[0] for _ in range(200)}
    assert starts == set(urls)


def test_a_failed_server_waits_out_its_own_backoff() -> None:
    rotation = ServerRotation(("a", "b", "c"), _FixedRng(0))
    rotation.failed("a", 100.0)
    assert rotation.order(101.0) == ["b", "c"]  # a backs off 5 s, the others are tried at once
    assert rotation.order(105.0) == ["a", "b", "c"]
    rotation.failed("a", 105.0)
    assert rotation.order(114.0) == ["b", "c"]  # second failure in a row: 10 s
    rotation.succeeded("a")
    assert rotation.order(114.0) == ["a", "b", "c"]


def test_when_every_server_backs_off_the_wait_is_until_the_first_is_ready() -> None:
    rotation = ServerRotation(("a", "b"), _FixedRng(0))
    rotation.failed("a", 0.0)
    rotation.failed("a", 5.0)  # a: ready at 15
    rotation.failed("b", 6.0)  # b: ready at 11
    assert rotation.order(7.0) == []
    assert rotation.wait(7.0) == 4.0
    assert rotation.order(11.0) == ["b"]


def test_one_url_is_the_plain_backoff() -> None:
    rotation = ServerRotation(("a",), _FixedRng(0))
    for failures, expected in ((1, 5.0), (2, 10.0), (3, 20.0)):
        rotation.failed("a", 0.0)
        assert rotation.wait(0.0) == expected == backoff_delay(failures, 1.0)
