"""The store on both backends (SQLite and a real PostgreSQL): principals, groups, jobs, job nodes,
output, restart rules, pruning; and SQLite's own migrations and query plans."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trio

from pushjobs.server.jobs.output import NodeOutput
from pushjobs.server.store.interfaces import (
    AlreadyExistsError,
    AsyncStore,
    InvalidOperationError,
    NotFoundError,
    SchemaError,
)
from pushjobs.server.store.migrations import LATEST_VERSION, MIGRATIONS, _statements
from pushjobs.server.store.postgres import PostgresStore
from pushjobs.server.store.records import (
    Group,
    Job,
    JobFilters,
    JobNode,
    OutputDelta,
    OutputRecord,
    OutputTotals,
    Principal,
)
from pushjobs.server.store.sql import SqlStore
from pushjobs.server.store.sqlite import SqliteStore
from tests.support.postgres import PostgresCluster

T0 = 1_700_000_000.0


@pytest.fixture(scope="session")
def pg_template(postgres: PostgresCluster) -> str:
    """A migrated, empty database that each PostgreSQL test's database is copied from."""
    url = postgres.new_database()
    PostgresStore(url).close()
    return url.rsplit("/", 1)[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """An empty store on each backend."""
    if request.param == "sqlite":
        s: SqlStore = SqliteStore(tmp_path / "pushjobs.db")
        yield s
        s.close()
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.new_database(request.getfixturevalue("pg_template"))
    s = PostgresStore(url)
    yield s
    s.close()
    cluster.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "pushjobs.db")
    yield s
    s.close()


def raw(store: SqlStore, sql: str) -> list[tuple]:
    """The rows of a read-only query in SQL both backends accept."""
    with store._db.reading() as conn:
        return conn.execute(sql).fetchall()


def make_job(store: SqlStore, job_id: str, org: str = "acme", **kw: object) -> Job:
    o = store.get_org(org)
    assert o is not None
    fields: dict = {
        "id": job_id,
        "org_id": o.id,
        "org_name": org,
        "command": "chef-client",
        "status": "new",
        "quorum": 1,
        "run_timeout": 3600,
        "requestor_name": "alice",
        "requestor_type": "user",
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(kw)
    return Job(**fields)


def seed(store: SqlStore) -> None:
    store.create_org("acme", "Acme Inc", now=T0)
    store.create_org("other", now=T0)
    store.create_user("alice", "PEM-alice", "Alice")
    store.create_user("bob", "PEM-bob")
    store.add_org_user("acme", "alice", admin=True)
    store.add_org_user("acme", "bob")
    store.create_client("acme", "web1", "PEM-web1")
    store.create_client("acme", "alice", "PEM-client-alice")
    store.create_client("other", "web1", "PEM-other-web1")


# ---------------------------------------------------------------------------
# schema


def test_open_applies_migrations_once(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    s = SqliteStore(path)
    assert s.applied_migrations == list(range(1, LATEST_VERSION + 1))
    assert s.schema_version() == LATEST_VERSION
    s.close()
    s = SqliteStore(path)
    assert s.applied_migrations == []
    mode = s._db._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    tables = {
        r[0] for r in s._db._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    assert {
        "schema_version",
        "orgs",
        "users",
        "org_users",
        "clients",
        "groups",
        "group_members",
        "jobs",
        "job_nodes",
        "job_output",
    } <= tables
    s.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 999")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        SqliteStore(path)


def v3_database(path: Path) -> None:
    """A database as pushjobs wrote it at schema version 3, with an org and two jobs."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for script in MIGRATIONS[:3]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (3)")
    conn.execute("INSERT INTO orgs (id, name, full_name, created_at) VALUES ('o1', 'acme', '', 0)")
    for job_id, created, status in (("01" * 16, T0, "complete"), ("02" * 16, T0 + 5, "aborted")):
        conn.execute(
            "INSERT INTO jobs (id, org_id, command, status, quorum, run_timeout, requestor_name, "
            "requestor_type, created_at, updated_at, env_json, capture) "
            "VALUES (?, 'o1', 'chef-client', ?, 1, 60, 'alice', 'user', ?, ?, '{}', 1)",
            (job_id, status, int(created), int(created)),
        )
        conn.execute(
            "INSERT INTO job_nodes (job_id, node_name, status, updated_at) "
            "VALUES (?, 'web1', 'succeeded', ?)",
            (job_id, int(created)),
        )
    conn.close()


def test_a_version_3_database_with_jobs_migrates_on_open(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    v3_database(path)
    s = SqliteStore(path)
    try:
        assert s.applied_migrations == list(range(4, LATEST_VERSION + 1))
        old = s.get_job("acme", "01" * 16)
        assert old == Job(
            "01" * 16, "o1", "acme", "chef-client", "complete", 1, 60, "alice", "user", T0, T0,
            env={}, capture=True,
        )  # fmt: skip
        assert (old.max_concurrency, old.max_errors, old.aborted_by) == (None, None, None)
        assert [j.id for j in s.list_jobs("acme", filters=JobFilters(nodes=["web1"]))] == [
            "02" * 16,
            "01" * 16,
        ]
        s.set_job_aborted_by("02" * 16, "bob")
        assert s.get_job("acme", "02" * 16).aborted_by == "bob"  # type: ignore[union-attr]
        indexes = {r[0] for r in s._db._conn.execute("SELECT name FROM sqlite_master")}
        assert {"job_nodes_by_node", "jobs_by_org_requestor", "jobs_by_org_command"} <= indexes
    finally:
        s.close()


# ---------------------------------------------------------------------------
# organizations, users, clients


def test_org_round_trip_and_admins_group(store: SqlStore) -> None:
    org = store.create_org("acme", "Acme Inc", now=T0 + 0.7)
    assert len(org.id) == 32 and int(org.id, 16) >= 0
    assert store.get_org("acme") == org
    assert org.created_at == T0  # second precision
    assert store.get_org("nope") is None
    assert store.get_group("acme", "admins") == Group("admins", [], [], [])
    with pytest.raises(AlreadyExistsError, match="organization 'acme' already exists"):
        store.create_org("acme")
    store.create_org("beta")
    assert [o.name for o in store.list_orgs()] == ["acme", "beta"]


def test_principals_user_and_client_share_a_name(store: SqlStore) -> None:
    seed(store)
    assert store.principals("acme", "alice") == [
        Principal("alice", "user", "PEM-alice", True),
        Principal("alice", "client", "PEM-client-alice", True),
    ]
    assert store.principals("other", "alice") == [Principal("alice", "user", "PEM-alice", False)]
    assert store.principals("other", "web1") == [
        Principal("web1", "client", "PEM-other-web1", True)
    ]
    assert store.principals("acme", "nobody") == []
    assert store.principals("nope", "web1") == []


def test_client_principals_answer_like_principals_for_every_client(store: SqlStore) -> None:
    seed(store)
    answers = store.client_principals("acme", 10)
    assert answers == [(n, store.principals("acme", n)) for n in ("alice", "web1")]
    assert store.client_principals("other", 10) == [("web1", store.principals("other", "web1"))]
    assert [n for n, _ in store.client_principals("acme", 1)] == ["alice"]
    assert store.client_principals("nope", 10) == []


def test_user_management(store: SqlStore) -> None:
    seed(store)
    with pytest.raises(AlreadyExistsError, match="user 'bob' already exists"):
        store.create_user("bob", "x")
    assert store.get_user("alice").display_name == "Alice"  # type: ignore[union-attr]
    assert [u.name for u in store.list_users()] == ["alice", "bob"]
    assert [u.name for u in store.list_users("acme")] == ["alice", "bob"]
    assert store.list_users("other") == []
    assert store.user_orgs("alice") == ["acme"]
    store.set_user_key("bob", "NEW")
    assert store.principals("acme", "bob")[0].public_key == "NEW"
    with pytest.raises(NotFoundError, match="user 'zed' not found"):
        store.set_user_key("zed", "x")
    # add-user reports whether anything changed
    assert store.add_org_user("acme", "bob") is False
    assert store.add_org_user("acme", "bob", admin=True) is True
    assert store.add_org_user("acme", "bob", admin=True) is False
    with pytest.raises(NotFoundError, match="organization 'zz' not found"):
        store.add_org_user("zz", "bob")


def test_remove_org_user_leaves_every_group(store: SqlStore) -> None:
    seed(store)
    store.create_group("acme", "ops")
    store.add_group_members("acme", "ops", users=["bob"])
    store.add_org_user("acme", "bob", admin=True)
    store.remove_org_user("acme", "bob")
    assert store.principals("acme", "bob") == [Principal("bob", "user", "PEM-bob", False)]
    assert store.get_group("acme", "ops").users == []  # type: ignore[union-attr]
    assert store.get_group("acme", "admins").users == ["alice"]  # type: ignore[union-attr]
    with pytest.raises(
        InvalidOperationError, match="user 'bob' is not associated with organization 'acme'"
    ):
        store.remove_org_user("acme", "bob")


def test_delete_user_drops_associations_and_memberships(store: SqlStore) -> None:
    seed(store)
    store.delete_user("alice")
    assert store.get_user("alice") is None
    assert store.get_group("acme", "admins").users == []  # type: ignore[union-attr]
    assert [p.type for p in store.principals("acme", "alice")] == ["client"]
    # a new user with the same name starts with no associations or memberships
    store.create_user("alice", "PEM2")
    assert store.user_orgs("alice") == []
    assert store.get_group("acme", "admins").users == []  # type: ignore[union-attr]


def test_client_management(store: SqlStore) -> None:
    seed(store)
    with pytest.raises(AlreadyExistsError, match="client 'web1' already exists in organization"):
        store.create_client("acme", "web1", "x")
    store.create_client("acme", "db1", "PEM-db1", admin=True)
    assert store.get_group("acme", "admins").clients == ["db1"]  # type: ignore[union-attr]
    assert store.list_clients("acme") == ["alice", "db1", "web1"]
    assert store.count_clients("acme") == 3
    store.set_client_key("acme", "db1", "NEWKEY")
    assert store.get_client("acme", "db1").public_key == "NEWKEY"  # type: ignore[union-attr]
    store.delete_client("acme", "db1")
    assert store.get_client("acme", "db1") is None
    assert store.get_group("acme", "admins").clients == []  # type: ignore[union-attr]
    with pytest.raises(NotFoundError, match="client 'db1' not found in organization 'acme'"):
        store.delete_client("acme", "db1")


def test_create_clients_batch_is_all_or_nothing(store: SqlStore) -> None:
    seed(store)
    names = [f"node{i:05d}" for i in range(5000)]
    assert store.create_clients("acme", [(n, "K") for n in names]) == 5000
    assert store.count_clients("acme") == 5002
    with pytest.raises(AlreadyExistsError, match="client 'node00003' already exists"):
        store.create_clients("acme", [("fresh", "K"), ("node00003", "K")])
    assert store.get_client("acme", "fresh") is None
    assert store.create_clients("acme", [("fresh", "K"), ("node00003", "K")], True) == 1
    with pytest.raises(AlreadyExistsError, match="client 'twice'"):
        store.create_clients("acme", [("twice", "K"), ("twice", "K")])


# ---------------------------------------------------------------------------
# groups


def test_groups_nested_and_by_kind(store: SqlStore) -> None:
    seed(store)
    store.create_group("acme", "pushy_job_writers")
    store.create_group("acme", "ops")
    store.add_group_members("acme", "ops", users=["bob"], clients=["web1"])
    store.add_group_members(
        "acme", "pushy_job_writers", users=["alice"], clients=["alice"], groups=["ops", "admins"]
    )
    store.add_group_members("acme", "ops", groups=["pushy_job_writers"])  # a cycle is fine
    store.add_group_members("acme", "ops", users=["bob"])  # already a member: no change
    assert store.get_group("acme", "pushy_job_writers") == Group(
        "pushy_job_writers", ["alice"], ["alice"], ["admins", "ops"]
    )
    assert store.get_group("acme", "ops") == Group("ops", ["bob"], ["web1"], ["pushy_job_writers"])
    assert store.get_group("other", "ops") is None
    assert store.list_groups("acme") == ["admins", "ops", "pushy_job_writers"]

    store.remove_group_members("acme", "pushy_job_writers", groups=["ops"], clients=["alice"])
    assert store.get_group("acme", "pushy_job_writers") == Group(
        "pushy_job_writers", ["alice"], [], ["admins"]
    )
    # a failed removal changes nothing (bob's first removal is rolled back)
    with pytest.raises(InvalidOperationError, match="user 'bob' is not a member of group 'ops'"):
        store.remove_group_members("acme", "ops", users=["bob", "bob"])
    with pytest.raises(InvalidOperationError, match="user 'alice' is not a member"):
        store.remove_group_members("acme", "ops", clients=["web1"], users=["alice"])
    assert store.get_group("acme", "ops") == Group("ops", ["bob"], ["web1"], ["pushy_job_writers"])

    store.delete_group("acme", "ops")
    assert store.get_group("acme", "pushy_job_writers").groups == ["admins"]  # type: ignore[union-attr]
    with pytest.raises(InvalidOperationError, match="group 'admins' cannot be deleted"):
        store.delete_group("acme", "admins")
    with pytest.raises(AlreadyExistsError, match="group 'admins' already exists"):
        store.create_group("acme", "admins")


def test_group_member_checks(store: SqlStore) -> None:
    seed(store)
    store.create_user("carol", "K")
    store.create_group("acme", "g")
    with pytest.raises(
        InvalidOperationError, match="user 'carol' is not associated with organization 'acme'"
    ):
        store.add_group_members("acme", "g", users=["carol"])
    with pytest.raises(NotFoundError, match="user 'zed' not found"):
        store.add_group_members("acme", "g", users=["zed"])
    with pytest.raises(NotFoundError, match="client 'db9' not found in organization 'acme'"):
        store.add_group_members("acme", "g", clients=["db9"])
    with pytest.raises(NotFoundError, match="group 'h' not found in organization 'acme'"):
        store.add_group_members("acme", "g", groups=["h"])
    with pytest.raises(InvalidOperationError, match="group 'g' cannot contain itself"):
        store.add_group_members("acme", "g", groups=["g"])
    with pytest.raises(NotFoundError, match="group 'h' not found"):
        store.add_group_members("acme", "h", users=["alice"])
    assert store.get_group("acme", "g") == Group("g")


# ---------------------------------------------------------------------------
# jobs


def test_job_round_trip_keeps_given_but_empty_options(store: SqlStore) -> None:
    seed(store)
    plain = make_job(store, "a" * 32)
    store.create_job(plain, ["web1"])
    given = make_job(
        store,
        "b" * 32,
        run_as_user="",
        dir="",
        env={},
        file="raw:",
        capture=True,
        created_at=T0 + 0.9,
        updated_at=T0 + 0.9,
    )
    store.create_job(given, ["web1"])
    loaded = store.get_job("acme", "a" * 32)
    assert loaded == plain
    assert (loaded.run_as_user, loaded.dir, loaded.env, loaded.file) == (None, None, None, None)
    loaded = store.get_job("acme", "b" * 32)
    assert loaded is not None
    assert (loaded.run_as_user, loaded.dir, loaded.env, loaded.file, loaded.capture) == (
        "",
        "",
        {},
        "raw:",
        True,
    )
    assert loaded.created_at == T0
    env_job = make_job(store, "c" * 32, env={"FOO": "bärs", "": "x"}, run_as_user="rebecca")
    store.create_job(env_job, ["web1"])
    assert store.get_job("acme", "c" * 32).env == {"FOO": "bärs", "": "x"}  # type: ignore[union-attr]
    # a job of another org is not found there
    assert store.get_job("other", "a" * 32) is None
    with pytest.raises(AlreadyExistsError):
        store.create_job(plain, ["web1"])


def test_job_creation_is_one_transaction(store: SqlStore) -> None:
    seed(store)
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.IntegrityError)):
        store.create_job(make_job(store, "d" * 32), ["n1", "n2", "n1"])
    assert store.get_job("acme", "d" * 32) is None
    assert store.get_job_nodes("d" * 32) == []


def test_ten_thousand_nodes_created_and_updated_in_batches(store: SqlStore) -> None:
    seed(store)
    names = [f"node{i:05d}" for i in range(10_000)]
    job = make_job(store, "e" * 32, quorum=10_000)
    store.create_job(job, names[::-1])
    nodes = store.get_job_nodes(job.id)
    assert [n.node_name for n in nodes] == names  # sorted by name
    assert {n.status for n in nodes} == {"new"}
    store.save_job_nodes([JobNode(job.id, n, "ready") for n in names])
    store.save_job_nodes(
        [
            JobNode(
                job.id,
                n,
                "failed",
                exit_status=2,
                signal=None,
                started_at=T0 + 1.5,
                finished_at=T0 + 9.2,
            )
            if i % 2
            else JobNode(job.id, n, "running", started_at=T0 + 1)
            for i, n in enumerate(names)
        ]
    )
    nodes = store.get_job_nodes(job.id)
    assert len(nodes) == 10_000
    assert nodes[0] == JobNode(job.id, "node00000", "running", None, None, T0 + 1, None)
    assert nodes[1] == JobNode(job.id, "node00001", "failed", 2, None, T0 + 1, T0 + 9)
    assert sum(n.status == "failed" for n in nodes) == 5000
    store.save_job_nodes([JobNode(job.id, "node00000", "failed", None, "SIGKILL", T0, T0)])
    assert store.get_job_nodes(job.id)[0].signal == "SIGKILL"
    store.save_job_nodes([])


def test_set_job_status(store: SqlStore) -> None:
    seed(store)
    store.create_job(make_job(store, "f" * 32), ["web1"])
    store.set_job_status("f" * 32, "voting", T0 + 5.5)
    job = store.get_job("acme", "f" * 32)
    assert job is not None and (job.status, job.updated_at, job.created_at) == (
        "voting",
        T0 + 5,
        T0,
    )
    store.set_job_status("f" * 32, "complete", T0 - 30)  # clock stepped back
    job = store.get_job("acme", "f" * 32)
    assert job is not None and (job.status, job.updated_at) == ("complete", T0)


def test_list_jobs_newest_first_with_filters(store: SqlStore) -> None:
    seed(store)
    specs = [
        ("01" * 16, T0 + 10, "complete"),
        ("02" * 16, T0 + 30, "running"),
        ("0f" * 16, T0 + 20, "complete"),
        ("0a" * 16, T0 + 20, "voting"),  # same second as 0f…: id desc breaks the tie
        ("03" * 16, T0 + 5, "crashed"),
    ]
    for job_id, created, status in specs:
        store.create_job(
            make_job(store, job_id, created_at=created, updated_at=created, status=status), ["n"]
        )
    store.create_job(make_job(store, "ff" * 16, org="other"), ["n"])
    ids = [j.id for j in store.list_jobs("acme")]
    assert ids == ["02" * 16, "0f" * 16, "0a" * 16, "01" * 16, "03" * 16]
    assert [j.id for j in store.list_jobs("acme", ["complete"])] == ["0f" * 16, "01" * 16]
    assert [j.id for j in store.list_jobs("acme", ["voting", "running"])] == [
        "02" * 16,
        "0a" * 16,
    ]
    assert store.list_jobs("acme", []) == []
    assert [j.id for j in store.list_jobs("acme", limit=2)] == ["02" * 16, "0f" * 16]
    assert [j.id for j in store.list_jobs("acme", limit=2, offset=2)] == ["0a" * 16, "01" * 16]
    assert [j.id for j in store.list_jobs("acme", offset=4)] == ["03" * 16]
    assert store.list_jobs("acme", offset=5) == []
    assert [j.id for j in store.list_jobs("acme", ["complete"], limit=1, offset=1)] == ["01" * 16]
    assert [j.org_name for j in store.list_jobs("other")] == ["other"]
    assert store.list_jobs("nope") == []


def test_job_limits_and_aborted_by_round_trip(store: SqlStore) -> None:
    seed(store)
    counted = make_job(store, "01" * 16, max_concurrency=5, max_errors=0)
    percent = make_job(store, "02" * 16, max_concurrency="100%", max_errors="10%")
    store.create_job(counted, ["web1"])
    store.create_job(percent, ["web1"])
    assert store.get_job("acme", counted.id) == counted
    assert store.get_job("acme", percent.id) == percent
    assert store.list_jobs("acme") == [percent, counted]
    stored = raw(store, "SELECT max_concurrency, max_errors, aborted_by FROM jobs ORDER BY id")
    assert stored == [("5", "0", None), ('"100%"', '"10%"', None)]
    store.set_job_aborted_by(percent.id, "bob")
    store.set_job_aborted_by("ff" * 16, "bob")  # no such job: nothing happens
    got = store.get_job("acme", percent.id)
    assert got is not None and got.aborted_by == "bob" and got.max_errors == "10%"
    assert store.get_job("acme", counted.id).aborted_by is None  # type: ignore[union-attr]


def filtered_jobs(store: SqlStore) -> None:
    """Jobs of acme (newest first: 06 … 01) with varied nodes, requestors and commands."""
    specs = [
        ("01", ["web1", "db1"], "alice", "chef-client", "complete"),
        ("02", ["web2"], "bob", "chef-client", "complete"),
        ("03", ["db1"], "alice", "chef-client -o recipe[x]", "aborted"),
        ("04", ["web1", "web2"], "bob", "Chef-Client", "running"),
        ("05", ["db2"], "alice", "chef-client", "quorum_failed"),
        ("06", ["web1"], "carol", "uptime", "complete"),
    ]
    for i, (prefix, nodes, user, command, status) in enumerate(specs):
        at = T0 + 10 * i
        job = make_job(
            store,
            prefix * 16,
            requestor_name=user,
            command=command,
            status=status,
            created_at=at,
            updated_at=at,
        )
        store.create_job(job, nodes)
    # another org with the same node, requestor and command
    store.create_job(make_job(store, "ff" * 16, org="other"), ["web1"])


def listed(store: SqlStore, *args: object, **filters: object) -> list[str]:
    """The two-digit prefixes of the acme jobs `list_jobs` answers."""
    jobs = store.list_jobs("acme", *args, filters=JobFilters(**filters))  # type: ignore[arg-type]
    return [j.id[:2] for j in jobs]


def test_list_jobs_by_node(store: SqlStore) -> None:
    seed(store)
    filtered_jobs(store)
    assert listed(store, nodes=["web1"]) == ["06", "04", "01"]
    assert listed(store, nodes=["db1", "web2"]) == ["04", "03", "02", "01"]
    assert listed(store, nodes=["web1", "web1"]) == ["06", "04", "01"]
    assert listed(store, nodes=["nope"]) == []
    assert listed(store, nodes=["WEB1"]) == []  # names are exact
    assert [j.org_name for j in store.list_jobs("other", filters=JobFilters(["web1"]))] == ["other"]


def test_list_jobs_by_requestor_command_and_time(store: SqlStore) -> None:
    seed(store)
    filtered_jobs(store)
    assert listed(store, requested_by="alice") == ["05", "03", "01"]
    assert listed(store, requested_by="Alice") == []
    assert listed(store, command="chef-client") == ["05", "02", "01"]  # exact: no prefix, case
    assert listed(store, command="chef-client -o recipe[x]") == ["03"]
    assert listed(store, since=T0 + 20) == ["06", "05", "04", "03"]  # inclusive
    assert listed(store, until=T0 + 20) == ["02", "01"]  # exclusive
    assert listed(store, since=T0 + 10, until=T0 + 30) == ["03", "02"]
    assert listed(store, since=T0 + 10.5, until=T0 + 30) == ["03"]
    assert listed(store, since=T0 + 20, until=T0 + 20) == []


def test_list_jobs_filters_combine_and_page(store: SqlStore) -> None:
    seed(store)
    filtered_jobs(store)
    assert listed(store, nodes=["web1", "db1"], requested_by="alice") == ["03", "01"]
    assert listed(store, ["complete"], nodes=["web1"]) == ["06", "01"]
    assert listed(store, ["complete", "aborted"], command="chef-client") == ["02", "01"]
    assert listed(store, None, 2, 0, nodes=["web1", "web2"]) == ["06", "04"]
    assert listed(store, None, 2, 2, nodes=["web1", "web2"]) == ["02", "01"]
    assert listed(store, None, 2, 4, nodes=["web1", "web2"]) == []
    assert listed(store, None, None, 1, requested_by="bob", since=T0) == ["02"]
    assert listed(store, [], nodes=["web1"]) == []


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (JobFilters(), "jobs_by_org_newest"),
        (JobFilters(since=T0, until=T0 + 50), "jobs_by_org_newest"),
        (JobFilters(requested_by="alice"), "jobs_by_org_requestor"),
        (JobFilters(command="chef-client"), "jobs_by_org_command"),
        (JobFilters(nodes=["web1", "db1"]), "job_nodes_by_node"),
    ],
)
def test_list_jobs_filters_use_an_index_in_page_order(
    sqlite_store: SqlStore, filters: JobFilters, index: str
) -> None:
    store = sqlite_store
    seed(store)
    filtered_jobs(store)
    calls: list[str] = []
    store._db._conn.set_trace_callback(calls.append)
    store.list_jobs("acme", limit=10, filters=filters)
    store._db._conn.set_trace_callback(None)
    select = next(sql for sql in calls if sql.startswith("SELECT") and "FROM jobs j" in sql)
    plan = " | ".join(row[3] for row in store._db._conn.execute(f"EXPLAIN QUERY PLAN {select}"))
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan and "SCAN j" not in plan, plan


def test_output_upsert_round_trip(store: SqlStore) -> None:
    seed(store)
    store.create_job(make_job(store, "ab" * 16, capture=True), ["web1", "web2"])
    assert store.get_output("ab" * 16, "web1") is None
    store.save_outputs([OutputRecord("ab" * 16, "web1", stdout=b"hel")])
    store.save_outputs(
        [
            OutputRecord("ab" * 16, "web1", b"hello\x00\xff", b"err", 7, 3, 1, 0, True),
            OutputRecord("ab" * 16, "web2", stderr=b"x"),
        ]
    )
    assert store.get_output("ab" * 16, "web1") == OutputRecord(
        "ab" * 16, "web1", b"hello\x00\xff", b"err", 7, 3, 1, 0, True
    )
    assert store.get_output("ab" * 16, "web2") == OutputRecord("ab" * 16, "web2", stderr=b"x")


def chunk_rows(store: SqlStore) -> int:
    return raw(store, "SELECT COUNT(*) FROM job_output_chunks")[0][0]


def write(store: SqlStore, record: NodeOutput) -> None:
    delta, written = record.take_delta()
    store.append_outputs([delta])
    written()


def test_output_appends_across_flushes_and_compacts_at_close(store: SqlStore) -> None:
    seed(store)
    job_id = "ab" * 16
    store.create_job(make_job(store, job_id, capture=True), ["web1", "web2"])
    record = NodeOutput(job_id, "web1", cap=20)
    record.add_chunk("stdout", 0, b"hello\x00")
    record.add_chunk("stderr", 0, b"e1")
    write(store, record)
    record.add_chunk("stdout", 6, b"\xffworld\n")
    record.add_chunk("stdout", 20, b"after gap")
    write(store, record)
    write(store, record)  # nothing new: counters only
    # every flush wrote only its new bytes; reads while open return exactly the stored bytes
    assert store.get_output(job_id, "web1") == record.to_record()
    assert chunk_rows(store) == 3
    row = raw(store, "SELECT length(stdout), length(stderr) FROM job_output")[0]
    assert row == (0, 0)  # the open record's row holds no bytes
    record.add_chunk("stdout", 29, b"0123456789")  # beyond the cap: discarded, counted
    record.set_v3_totals(39, 2)
    record.close()
    write(store, record)
    final = store.get_output(job_id, "web1")
    assert final == record.to_record()
    assert final is not None and final.closed and final.stdout.endswith(b"bytes omitted]\n")
    assert chunk_rows(store) == 0  # compacted into the record's blobs
    assert store.get_output_totals(job_id) == {"web1": OutputTotals(39, 2, True, True)}


def test_output_append_rewrites_from_position_on_retry_and_replace(store: SqlStore) -> None:
    seed(store)
    job_id = "ab" * 16
    store.create_job(make_job(store, job_id, capture=True), ["web1"])
    record = NodeOutput(job_id, "web1", cap=100)
    record.add_chunk("stdout", 0, b"abc")
    write(store, record)
    record.add_chunk("stdout", 3, b"def")
    lost, _ = record.take_delta()
    store.append_outputs([lost])  # stored, but the writer never learned it
    record.add_chunk("stdout", 6, b"ghi")
    write(store, record)  # starts at 3 again
    assert store.get_output(job_id, "web1").stdout == b"abcdefghi"  # type: ignore[union-attr]
    record.set_v2_results("new", "err")  # replaces the whole content
    write(store, record)
    got = store.get_output(job_id, "web1")
    assert got == OutputRecord(job_id, "web1", b"new", b"err", 3, 3, 0, 0, True)
    assert chunk_rows(store) == 0


def test_output_append_after_whole_record_save(store: SqlStore) -> None:
    seed(store)
    job_id = "ab" * 16
    store.create_job(make_job(store, job_id, capture=True), ["web1"])
    store.save_outputs([OutputRecord(job_id, "web1", stdout=b"hel", stdout_total=3)])
    store.append_outputs([OutputDelta(job_id, "web1", stdout=b"lo", stdout_at=3, stdout_total=5)])
    assert store.get_output(job_id, "web1").stdout == b"hello"  # type: ignore[union-attr]
    store.save_outputs([OutputRecord(job_id, "web1", stdout=b"x", closed=True)])
    assert store.get_output(job_id, "web1").stdout == b"x"  # type: ignore[union-attr]
    assert chunk_rows(store) == 0


def test_start_up_compacts_open_output(store: SqlStore) -> None:
    seed(store)
    job_id = "03" * 16
    store.create_job(make_job(store, job_id, status="running"), ["a", "b"])
    record = NodeOutput(job_id, "a", cap=100)
    for offset in range(0, 12, 3):
        record.add_chunk("stderr", offset, b"xyz")
        write(store, record)
    assert chunk_rows(store) == 4
    assert store.mark_interrupted_crashed(T0 + 100) == 1
    assert chunk_rows(store) == 0
    got = store.get_output(job_id, "a")
    assert got is not None and got.closed and got.stderr == b"xyz" * 4 and got.stderr_total == 12


def test_prune_and_org_delete_remove_output_chunks(store: SqlStore) -> None:
    seed(store)
    store.create_job(make_job(store, "01" * 16, status="complete"), ["a"])
    store.create_job(make_job(store, "02" * 16, org="other", status="running"), ["a"])
    for job_id in ("01" * 16, "02" * 16):
        store.append_outputs([OutputDelta(job_id, "a", stdout=b"open", stdout_total=4)])
    assert chunk_rows(store) == 2
    assert store.prune_jobs(T0 + 1) == 1
    assert chunk_rows(store) == 1 and store.get_output("01" * 16, "a") is None
    store.delete_org("other")
    assert chunk_rows(store) == 0


def test_output_totals_without_bytes(store: SqlStore) -> None:
    seed(store)
    job_id = "ab" * 16
    store.create_job(make_job(store, job_id, capture=True), ["a", "b", "c"])
    store.save_outputs([OutputRecord(job_id, "a", b"x" * 5, b"", 9, 0, 4, 0, True)])
    store.append_outputs([OutputDelta(job_id, "b", stderr=b"e", stderr_total=1)])
    assert store.get_output_totals(job_id) == {
        "a": OutputTotals(9, 0, True, True),
        "b": OutputTotals(0, 1, False),
    }
    assert store.get_output_totals("cd" * 16) == {}


def test_mark_interrupted_crashed(store: SqlStore) -> None:
    seed(store)
    statuses = {"01": "new", "02": "voting", "03": "running", "04": "complete", "05": "aborted"}
    for prefix, status in statuses.items():
        store.create_job(make_job(store, prefix * 16, status=status), ["a", "b", "c", "d"])
    store.save_job_nodes(
        [
            JobNode("03" * 16, "a", "ready"),
            JobNode("03" * 16, "b", "running", started_at=T0),
            JobNode("03" * 16, "c", "succeeded", 0, None, T0, T0 + 1),
            JobNode("04" * 16, "a", "succeeded", 0, None, T0, T0 + 2),
        ]
    )
    store.save_outputs(
        [
            OutputRecord("03" * 16, "b", b"partial"),
            OutputRecord("03" * 16, "c", b"done", closed=True),
        ]
    )
    now = T0 + 100.4
    assert store.mark_interrupted_crashed(now) == 3
    for prefix, status in statuses.items():
        job = store.get_job("acme", prefix * 16)
        assert job is not None
        if status in ("new", "voting", "running"):
            assert (job.status, job.updated_at) == ("crashed", T0 + 100)
        else:
            assert (job.status, job.updated_at) == (status, T0)
    nodes = {n.node_name: n for n in store.get_job_nodes("03" * 16)}
    assert nodes["a"] == JobNode("03" * 16, "a", "crashed", None, None, None, T0 + 100)
    assert nodes["b"] == JobNode("03" * 16, "b", "crashed", None, None, T0, T0 + 100)
    assert nodes["c"].status == "succeeded" and nodes["c"].finished_at == T0 + 1
    assert nodes["d"].status == "crashed"
    # the finished job's leftover 'new' rows are crashed too (lifecycle.md §9: every job-node)
    assert {n.status for n in store.get_job_nodes("04" * 16)} == {"succeeded", "crashed"}
    assert store.get_output("03" * 16, "b").closed is True  # type: ignore[union-attr]
    assert store.get_output("03" * 16, "b").stdout == b"partial"  # type: ignore[union-attr]
    assert store.mark_interrupted_crashed(now + 50) == 0


def test_prune_finished_old_jobs(store: SqlStore) -> None:
    seed(store)
    old, new = T0, T0 + 10 * 86400
    store.create_job(make_job(store, "01" * 16, status="complete", created_at=old), ["a"])
    store.create_job(make_job(store, "02" * 16, status="running", created_at=old), ["a"])
    store.create_job(make_job(store, "03" * 16, status="crashed", created_at=new), ["a"])
    store.create_job(
        make_job(store, "04" * 16, org="other", status="aborted", created_at=old), ["a"]
    )
    store.save_outputs([OutputRecord("01" * 16, "a", b"x", closed=True)])
    cutoff = old + 86400
    assert store.prune_jobs(cutoff, "acme") == 1
    assert store.get_job("acme", "01" * 16) is None
    assert store.get_job_nodes("01" * 16) == [] and store.get_output("01" * 16, "a") is None
    assert store.get_job("acme", "02" * 16) is not None  # not finished
    assert store.get_job("other", "04" * 16) is not None  # other org
    assert store.prune_jobs(cutoff) == 1
    assert store.get_job("other", "04" * 16) is None
    assert store.prune_jobs(new + 1) == 1
    with pytest.raises(NotFoundError, match="organization 'nope' not found"):
        store.prune_jobs(cutoff, "nope")


def test_prune_jobs_batch_takes_the_oldest_finished_first(store: SqlStore) -> None:
    seed(store)
    for i in range(5):
        status = "running" if i == 2 else "complete"
        job = make_job(store, f"{i:02d}" * 16, status=status, created_at=T0 + i)
        store.create_job(job, ["a"])
        store.save_outputs([OutputRecord(job.id, "a", b"x", closed=True)])
    cutoff = T0 + 4  # jobs 0-3 are older; 2 is running
    assert store.prune_jobs_batch(cutoff, 2) == 2
    assert store.get_job("acme", "00" * 16) is None and store.get_job("acme", "01" * 16) is None
    assert raw(store, "SELECT COUNT(*) FROM job_output")[0][0] == 3
    assert raw(store, "SELECT COUNT(*) FROM job_nodes")[0][0] == 3
    assert store.prune_jobs_batch(cutoff, 2) == 1  # short: the step is done
    assert store.get_job("acme", "03" * 16) is None
    assert store.get_job("acme", "02" * 16) is not None  # running
    assert store.get_job("acme", "04" * 16) is not None  # newer
    assert store.prune_jobs_batch(cutoff, 2) == 0  # idempotent


def test_prune_outputs_batch_keeps_the_jobs(store: SqlStore) -> None:
    seed(store)
    for i in range(4):
        status = "running" if i == 1 else "complete"
        job = make_job(store, f"{i:02d}" * 16, status=status, created_at=T0 + i)
        store.create_job(job, ["a", "b"])
        store.save_outputs([OutputRecord(job.id, node, b"x", closed=True) for node in ("a", "b")])
    cutoff = T0 + 3  # jobs 0-2 are older; 1 is running
    assert store.prune_outputs_batch(cutoff, 1) == 1
    assert store.prune_outputs_batch(cutoff, 1) == 1
    assert store.prune_outputs_batch(cutoff, 1) == 0  # nothing left to prune
    for i in (0, 2):
        job_id = f"{i:02d}" * 16
        assert store.get_output(job_id, "a") is None and store.get_output(job_id, "b") is None
        assert store.get_job("acme", job_id) is not None
        assert [n.node_name for n in store.get_job_nodes(job_id)] == ["a", "b"]
    assert store.get_output("01" * 16, "a") is not None  # running
    assert store.get_output("03" * 16, "a") is not None  # newer


def test_delete_org_removes_everything_inside(store: SqlStore) -> None:
    seed(store)
    store.create_group("acme", "ops")
    store.add_group_members("acme", "ops", users=["bob"], clients=["web1"])
    store.create_job(make_job(store, "01" * 16), ["web1"])
    store.save_outputs([OutputRecord("01" * 16, "web1", b"x")])
    store.delete_org("acme")
    assert store.get_org("acme") is None
    assert store.user_orgs("alice") == [] and store.get_user("alice") is not None
    assert store.get_job_nodes("01" * 16) == [] and store.get_output("01" * 16, "web1") is None
    counts = {
        table: raw(store, f"SELECT COUNT(*) FROM {table}")[0][0]
        for table in ("groups", "group_members", "clients", "jobs", "org_users")
    }
    assert counts == {"groups": 1, "group_members": 0, "clients": 1, "jobs": 0, "org_users": 0}
    with pytest.raises(NotFoundError, match="organization 'acme' not found"):
        store.delete_org("acme")


# ---------------------------------------------------------------------------
# async facade


async def test_async_store_runs_calls_in_a_worker_thread(tmp_path: Path) -> None:
    sync = SqliteStore(tmp_path / "a.db")
    astore = AsyncStore(sync)
    org = await astore.create_org("acme")
    assert (await astore.get_org("acme")) == org
    assert await astore.run(threading.get_ident) != threading.get_ident()

    async def make(i: int) -> None:
        await astore.create_org(f"org{i}")

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(make, i)
    assert len(await astore.run(sync.list_orgs)) == 21
    with pytest.raises(AlreadyExistsError):
        await astore.create_org("org1")
    assert await astore.run(sync.count_clients, "acme") == 0
    with pytest.raises(AttributeError):
        astore.not_a_method  # noqa: B018
    with pytest.raises(AttributeError):
        astore.delete_org  # noqa: B018  (only the server's calls, no proxy for the rest)
    await astore.aclose()
    with pytest.raises(sqlite3.ProgrammingError):
        sync.get_org("acme")


async def test_async_store_job_and_principal_calls(tmp_path: Path) -> None:
    sync = SqliteStore(tmp_path / "a.db")
    seed(sync)
    astore = AsyncStore(sync)
    job = make_job(sync, "ab" * 16, capture=True)
    await astore.create_job(job, ["web1", "web2"])
    assert await astore.get_job("acme", job.id) == job
    assert await astore.get_job("other", job.id) is None
    assert [j.id for j in await astore.list_jobs("acme", ["new"], 10, 0)] == [job.id]
    by_node = await astore.list_jobs("acme", filters=JobFilters(nodes=["web2"]))
    assert [j.id for j in by_node] == [job.id]
    assert await astore.list_jobs("acme", filters=JobFilters(requested_by="bob")) == []
    await astore.set_job_aborted_by(job.id, "bob")
    assert (await astore.get_job("acme", job.id)).aborted_by == "bob"  # type: ignore[union-attr]
    job.aborted_by = "bob"
    record = NodeOutput(job.id, "web1", cap=20)
    record.add_chunk("stdout", 0, b"hello")
    delta, written = record.take_delta()
    await astore.write_batch(
        {job.id: ("running", T0 + 2)},
        [JobNode(job.id, "web1", "running", started_at=T0 + 1)],
        [delta],
    )
    written()
    stored = await astore.get_job("acme", job.id)
    assert stored is not None and (stored.status, stored.updated_at) == ("running", T0 + 2)
    nodes = await astore.get_job_nodes(job.id)
    assert nodes == [JobNode(job.id, "web1", "running", started_at=T0 + 1), JobNode(job.id, "web2")]
    assert await astore.get_output(job.id, "web1") == record.to_record()
    await astore.save_outputs([OutputRecord(job.id, "web2", stdout=b"x", stdout_total=1)])
    assert await astore.get_output_totals(job.id) == {
        "web1": OutputTotals(5, 0, False),
        "web2": OutputTotals(1, 0, False),
    }
    await astore.write_batch({}, [], [])  # an empty batch writes nothing

    assert await astore.principals("acme", "alice") == [
        Principal("alice", "user", "PEM-alice", True),
        Principal("alice", "client", "PEM-client-alice", True),
    ]
    admins = await astore.get_group("acme", "admins")
    assert admins is not None and admins.users == ["alice"]
    cursor, changes = await astore.client_key_changes(None)
    assert changes == []
    sync.set_client_key("acme", "web1", "PEM-new")
    assert (await astore.client_key_changes(cursor))[1] == [(sync.get_org("acme").id, "web1")]
    assert await astore.prune_client_key_changes(T0 + 10**9) == 1
    await astore.aclose()


# -- node inventory (http-api.md §7.7) ----------------------------------------------------------


def test_node_inventory_keeps_the_last_labels(store: SqlStore) -> None:
    from pushjobs.server.store.records import InventoryNode, InventoryUpdate

    assert store.node_inventory("acme") == []
    store.record_inventory(
        [
            InventoryUpdate("acme", "web1", T0),
            InventoryUpdate("acme", "db1", T0, {"role": "db"}),
            InventoryUpdate("other", "web1", T0, {"role": "x"}),
        ]
    )
    store.record_inventory([InventoryUpdate("acme", "web1", T0 + 1, {"role": "web"})])
    store.record_inventory([InventoryUpdate("acme", "db1", T0 + 2)])  # a connect keeps labels
    assert store.node_inventory("acme") == [
        InventoryNode("db1", {"role": "db"}, T0, T0 + 2),
        InventoryNode("web1", {"role": "web"}, T0, T0 + 1),
    ]
    store.record_inventory([])
    assert [n.node_name for n in store.node_inventory("other")] == ["web1"]
