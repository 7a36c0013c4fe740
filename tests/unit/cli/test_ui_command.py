"""`pushjobs ui` as a command: the missing-extra message, the org of the URL, the options."""

from __future__ import annotations

import sys

import pytest

from pushjobs.cli.errors import UsageError
from pushjobs.cli.main import build_parser, run
from pushjobs.cli.ui.command import NEEDS_EXTRA, bind, has_desktop, org_of


def test_without_starlette_it_names_the_ui_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "starlette", None)  # `import starlette` raises ImportError
    assert run(["ui", "--no-browser"]) == 3
    assert capsys.readouterr().err == f"ERROR: {NEEDS_EXTRA}\n"
    assert NEEDS_EXTRA == "pushjobs ui needs the ui extra: pip install 'pushjobs[ui]'"


def test_the_options() -> None:
    args = build_parser().parse_args(["ui", "--port", "8080", "--no-browser", "--profile", "p"])
    assert (args.handler, args.port, args.no_browser, args.profile) == ("ui", 8080, True, "p")
    default = build_parser().parse_args(["ui"])
    assert (default.port, default.no_browser) == (0, False)


@pytest.mark.parametrize(
    ("url", "org"),
    [
        ("https://push.example.com/organizations/acme", "acme"),
        ("https://push.example.com/prefix/organizations/my%20org", "my org"),
    ],
)
def test_the_org_comes_from_the_server_url(url: str, org: str) -> None:
    assert org_of(url) == org


def test_a_server_url_without_an_org_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="organization URL"):
        org_of("https://push.example.com")


def test_it_listens_on_127_0_0_1_only_and_names_a_busy_port() -> None:
    sock = bind(0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind(port)
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("environ", "platform", "opens"),
    [
        ({}, "linux", False),  # a server over SSH: only the printed URL
        ({"DISPLAY": ":0"}, "linux", True),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
        ({}, "darwin", True),
        ({}, "win32", True),
    ],
)
def test_the_browser_is_opened_only_where_a_desktop_can_show_it(
    environ: dict[str, str], platform: str, opens: bool
) -> None:
    assert has_desktop(environ, platform) is opens
