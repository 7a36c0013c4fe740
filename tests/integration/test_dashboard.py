"""`pushjobs ui` in a real browser: Debian's chromium driven by Playwright, a real server, three
real agents and the real `pushjobs ui --no-browser --port 0` process in between.

The page's every API call goes through the dashboard process, which signs it with the admin's
key; nothing here talks to the page's internals. Screenshots of the four pages go to a temp
dir, and to docs/images/ when PUSHJOBS_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agents import running_agents
from tests.support.cli import cli_env, make_cli_home, popen_cli
from tests.support.procs import kill_if_running
from tests.support.server import ServerProcess
from tests.support.waits import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "docs" / "images"
URL_LINE = re.compile(r"^pushjobs ui: (http://127\.0\.0\.1:(\d+)/\?token=(\S+))$")
TIMEOUT_MS = 45_000
RED = "rgb(214, 69, 69)"  # --bad in style.css
WHITELIST = """
"greet" = { run = 'echo "hello from $CHEF_PUSH_NODE_NAME"', shell = true }
"fail" = { run = 'echo "$CHEF_PUSH_NODE_NAME is failing" >&2; exit 3', shell = true }
"sleep" = { pattern = '^sleep ([0-9]{1,2})$', run = 'sleep \\1' }
"""
TAG = f"ui-{secrets.token_hex(3)}"  # this run's label value, matched by no other test's node

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is missing (apt-get install chromium)"
)
sync_api.expect.set_options(timeout=TIMEOUT_MS)


class Dashboard:
    """The running `pushjobs ui` process and the URL it printed."""

    def __init__(self, proc: subprocess.Popen[str], url: str, port: int, token: str) -> None:
        self.proc = proc
        self.url = url
        self.port = port
        self.token = token
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    base = tmp_path_factory.mktemp("ui-fleet")
    labels = {"labels": {"fleet": TAG}}
    with running_agents(server, base, "web", 3, whitelist=WHITELIST, extra=labels) as agents:
        yield [agent.name for agent in agents]


@pytest.fixture(scope="module")
def dashboard(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    home = make_cli_home(server, tmp_path_factory.mktemp("ui-home"))
    proc = popen_cli("ui", "--no-browser", "--port", "0", env=cli_env(home))
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        line = lines.get(timeout=60)
        assert line is not None, f"pushjobs ui ended: {proc.wait()} {proc.stderr.read()}"  # type: ignore[union-attr]
        match = URL_LINE.match(line.strip())
        assert match, line
        print(f"pushjobs ui listens on port {match.group(2)}")
        yield Dashboard(proc, match.group(1), int(match.group(2)), match.group(3))
    finally:
        kill_if_running(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, dashboard: Dashboard) -> Iterator[Any]:
    """A fresh browser context that opened the printed URL (so it holds the cookie)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.goto(dashboard.url)
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("screenshots")

    def save(page: Any, name: str) -> None:
        path = folder / f"dashboard-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if os.environ.get("PUSHJOBS_SCREENSHOTS") == "1":
            IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, IMAGES / path.name)

    return save


def start_from_form(page: Any, command: str, nodes: list[str], **fields: str) -> str:
    """Fill the Start page and submit; returns the job id the page went to."""
    page.goto(page.url.split("#")[0] + "#/start")
    for node in nodes:
        page.check(f"input[name=node][value='{node}']")
    page.fill("#command", command)
    for field, value in fields.items():
        page.fill(f"#{field}", value)
    page.click("#submit")
    page.wait_for_url(re.compile(r"#/job/[0-9a-f]{32}$"))
    return page.url.rsplit("/", 1)[1]


def cells(page: Any, status: str) -> Any:
    return page.locator(f"#grid .cell[data-status={status}]")


def test_the_token_moves_into_a_cookie_and_every_node_is_shown_available(
    page: Any, fleet: list[str], dashboard: Dashboard, shots: Any
) -> None:
    assert "token=" not in page.url  # redirected to drop it from the address bar
    cookies = page.context.cookies()
    [cookie] = [c for c in cookies if c["name"] == f"pushjobs_ui_{dashboard.port}"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    for node in fleet:
        row = page.locator(f"#nodes tr[data-node='{node}']")
        sync_api.expect(row.locator(".availability")).to_have_text("available")
        sync_api.expect(row.locator(".status")).to_have_text("online")
        sync_api.expect(row.locator(".label", has_text=f"fleet={TAG}")).to_have_count(1)
    page.fill("#node-filter", TAG)  # the filter searches labels too
    sync_api.expect(page.locator("#nodes tr[data-node]")).to_have_count(3)
    page.fill("#node-filter", fleet[1])
    sync_api.expect(page.locator("#nodes tr[data-node]")).to_have_count(1)
    page.fill("#node-filter", "")
    sync_api.expect(page.locator("#node-summary")).to_contain_text("available")
    shots(page, "nodes")


def test_greet_started_from_the_form_turns_the_grid_green_with_each_output_line(
    page: Any, fleet: list[str], server: ServerProcess, shots: Any
) -> None:
    page.goto(page.url.split("#")[0] + "#/start")
    for node in fleet:
        page.check(f"input[name=node][value='{node}']")
    page.fill("#command", "greet")
    page.click("#submit")
    page.wait_for_url(re.compile(r"#/job/[0-9a-f]{32}$"))
    job_id = page.url.rsplit("/", 1)[1]
    sync_api.expect(cells(page, "succeeded")).to_have_count(3)
    sync_api.expect(page.locator("#job-status")).to_have_text("complete")
    sync_api.expect(page.locator("#counts [data-status=succeeded]")).to_contain_text("3")
    output = page.locator("#output")
    for node in fleet:
        sync_api.expect(output).to_contain_text(f"{node}: hello from {node}")
        sync_api.expect(page.locator(f"#job-nodes tr[data-node='{node}'] .exit")).to_have_text("0")
    shots(page, "job")
    # One node's own output.
    page.click(f"#grid .cell[data-node='{fleet[0]}']")
    sync_api.expect(page.locator("#node-stdout")).to_have_text(f"hello from {fleet[0]}\n")
    assert fleet[1] not in page.locator("#node-stdout").inner_text()
    # What the server holds is what the page showed.
    job = server.get(f"jobs/{job_id}").json()
    assert job["status"] == "complete" and sorted(job["nodes"]["succeeded"]) == sorted(fleet)
    assert job["command"] == "greet" and job["capture_output"] is True
    # The jobs page lists it first, with its counts and requester.
    page.click("#nav-jobs")
    first = page.locator("#jobs tr").first
    sync_api.expect(first).to_have_attribute("data-job", job_id)
    sync_api.expect(first).to_contain_text("3 succeeded")
    sync_api.expect(first).to_contain_text(server.admin_user)


def test_a_failing_job_shows_red_cells_and_the_exit_code(page: Any, fleet: list[str]) -> None:
    start_from_form(page, "fail", fleet)
    failed = cells(page, "failed")
    sync_api.expect(failed).to_have_count(3)
    for i in range(3):
        sync_api.expect(failed.nth(i)).to_have_css("background-color", RED)
    for node in fleet:
        sync_api.expect(page.locator(f"#job-nodes tr[data-node='{node}'] .exit")).to_have_text("3")
        sync_api.expect(page.locator("#output")).to_contain_text(f"{node} is failing")
    sync_api.expect(cells(page, "failed").first).to_contain_text("exit 3")


def test_a_running_sleep_job_is_aborted_from_the_page(
    page: Any, fleet: list[str], server: ServerProcess
) -> None:
    job_id = start_from_form(page, "sleep 60", fleet, quorum="2")
    sync_api.expect(cells(page, "running")).to_have_count(3)
    sync_api.expect(page.locator("#job-quorum")).to_have_text("2 of 3 nodes")
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#abort")
    sync_api.expect(page.locator("#job-status")).to_have_text("aborted")
    sync_api.expect(cells(page, "aborted")).to_have_count(3)
    assert dialogs and job_id in dialogs[0]
    job = server.get(f"jobs/{job_id}").json()
    assert job["status"] == "aborted" and job["aborted_by"] == server.admin_user
    for node in fleet:  # the nodes are free again for later tests
        server.wait_node(node)


def test_a_server_error_is_shown_as_the_servers_text(page: Any, fleet: list[str]) -> None:
    page.goto(page.url.split("#")[0] + "#/start")
    page.check(f"input[name=node][value='{fleet[0]}']")
    page.fill("#command", "greet")
    page.fill("#max-errors", "101%")
    page.click("#submit")
    sync_api.expect(page.locator("#error")).to_contain_text("max errors must be")
    page.fill("#max-errors", "")
    page.fill("#run-timeout", "99999999999")  # above the server's integer range
    page.click("#submit")
    sync_api.expect(page.locator("#error")).to_have_text(
        "400 Bad Request: invalid type supplied for run_timeout (expected a number)"
    )
    assert "#/start" in page.url  # the form stays, with what was typed
    page.goto(page.url.split("#")[0] + "#/job/" + "0" * 32)
    sync_api.expect(page.locator("#error")).to_contain_text(
        f"404 Not Found: job '{'0' * 32}' not found"
    )


def test_the_jobs_page_lists_jobs_newest_first_with_filters_and_pages(
    page: Any, fleet: list[str], shots: Any
) -> None:
    """By now this module's server ran greet, fail and an aborted sleep, in that order."""
    page.goto(page.url.split("#")[0] + "#/jobs?limit=2")
    rows = page.locator("#jobs tr[data-job]")
    sync_api.expect(rows).to_have_count(2)
    sync_api.expect(rows.nth(0)).to_contain_text("sleep 60")
    sync_api.expect(rows.nth(0)).to_contain_text("3 aborted")
    sync_api.expect(rows.nth(1)).to_contain_text("fail")
    sync_api.expect(rows.nth(1)).to_contain_text("3 failed")
    sync_api.expect(page.locator("#prev")).to_be_disabled()
    page.click("#next")
    sync_api.expect(rows).to_have_count(1)
    sync_api.expect(rows.nth(0)).to_contain_text("greet")
    sync_api.expect(page.locator("#next")).to_be_disabled()
    page.click("#prev")
    sync_api.expect(rows.nth(0)).to_contain_text("sleep 60")
    page.fill("#f-status", "aborted")
    page.click("#job-filters button[type=submit]")
    sync_api.expect(rows).to_have_count(1)
    sync_api.expect(rows.nth(0)).to_contain_text("sleep 60")
    page.fill("#f-status", "")
    page.fill("#f-command", "greet")
    page.click("#job-filters button[type=submit]")
    sync_api.expect(rows).to_have_count(1)
    sync_api.expect(rows.nth(0)).to_contain_text("3 succeeded")
    page.goto(page.url.split("#")[0] + "#/jobs")
    sync_api.expect(rows).to_have_count(3)
    sync_api.expect(rows.nth(2)).to_contain_text("3 succeeded")
    shots(page, "jobs")


def test_a_label_selector_picks_the_nodes_and_an_offline_node_stays_listed(
    page: Any,
    fleet: list[str],
    server: ServerProcess,
    tmp_path: Path,
    shots: Any,
) -> None:
    """Runs after the jobs page test, which counts this module's jobs."""
    role = f"canary-{TAG}"
    with running_agents(
        server, tmp_path, "canary", 1, whitelist=WHITELIST, extra={"labels": {"role": role}}
    ) as [canary]:
        page.goto(page.url.split("#")[0] + "#/start")
        page.fill("#command", "greet")
        page.fill("#selector", "role in (web")
        sync_api.expect(page.locator("#selector-matches")).to_have_text(
            "400 Bad Request: invalid selector 'role in (web': missing ')'"
        )
        page.fill("#selector", f"role={role}")
        sync_api.expect(page.locator("#selector-matches")).to_have_text(
            f"matches 1 node (1 available): {canary.name}"
        )
        page.fill("#quorum", "100%")  # a percentage counts the selector's matches
        shots(page, "start")
        page.click("#submit")
        page.wait_for_url(re.compile(r"#/job/[0-9a-f]{32}$"))
        job_id = page.url.rsplit("/", 1)[1]
        sync_api.expect(page.locator("#grid .cell")).to_have_count(1)
        sync_api.expect(cells(page, "succeeded")).to_have_count(1)
        sync_api.expect(page.locator("#output")).to_contain_text(
            f"{canary.name}: hello from {canary.name}"
        )
        job = server.get(f"jobs/{job_id}").json()
        assert job["nodes"] == {"succeeded": [canary.name]}
        sync_api.expect(page.locator("#job-quorum")).to_have_text("1 of 1 nodes")
        # Both ways of choosing at once: a checked node and the selector, de-duplicated.
        page.goto(page.url.split("#")[0] + "#/start")
        page.check(f"input[name=node][value='{fleet[0]}']")
        page.fill("#command", "greet")
        page.fill("#selector", f"role={role}")
        page.click("#submit")
        page.wait_for_url(re.compile(r"#/job/[0-9a-f]{32}$"))
        sync_api.expect(cells(page, "succeeded")).to_have_count(2)
    # The canary stopped: node_states?all=true still lists it, offline.
    page.goto(page.url.split("#")[0] + "#/nodes")
    row = page.locator(f"#nodes tr[data-node='{canary.name}']")
    sync_api.expect(row.locator(".status")).to_have_text("offline")
    sync_api.expect(row.locator(".availability")).to_have_text("unavailable")
    sync_api.expect(row.locator(".label", has_text=f"role={role}")).to_have_count(1)
    page.goto(page.url.split("#")[0] + "#/start")
    page.fill("#selector", f"role={role}")
    sync_api.expect(page.locator("#selector-matches")).to_have_text(
        f"matches 1 node (0 available): {canary.name}"
    )


def test_the_local_server_refuses_what_the_page_would_not_send(
    dashboard: Dashboard, server: ServerProcess
) -> None:
    org = server.org_url.rsplit("/", 1)[1]
    api = f"{dashboard.base}/organizations/{org}/pushy/node_states"
    assert httpx.get(api).status_code == 403  # no cookie
    cookies = {f"pushjobs_ui_{dashboard.port}": dashboard.token}
    with httpx.Client(cookies=cookies) as http:
        assert http.get(api).status_code == 200
        rebound = http.get(api, headers={"Host": f"evil.example:{dashboard.port}"})
        assert rebound.status_code == 403 and "Host" in rebound.text
        post = http.post(f"{dashboard.base}/organizations/{org}/pushy/jobs", json={})
        assert post.status_code == 403 and "X-Pushjobs-Token" in post.text
        assert http.get(f"{dashboard.base}/organizations/{org}/pushy/config/x").status_code == 404
        assert http.get(f"{dashboard.base}/organizations/other/pushy/jobs").status_code == 404
    wait_for(lambda: dashboard.proc.poll() is None, 1, what="the dashboard to keep running")
