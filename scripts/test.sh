#!/usr/bin/env bash
# Install pushjobs with its test extras into ./.venv (and Debian's postgresql, iproute2 and chromium
# packages when they are missing), then run the linter and the whole test suite.
# Usage: scripts/test.sh [pytest args...]     PYTHON=python3.11 picks the interpreter (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "test: pushjobs needs Python 3.11 or newer ($PYTHON: $("$PYTHON" -V 2>&1 || echo missing))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "==> Creating .venv"
    if ! "$PYTHON" -m venv .venv; then
        echo "test: could not create .venv; on Debian: apt-get install python3-venv" >&2
        rm -rf .venv
        exit 1
    fi
fi
echo "==> Installing pushjobs with its test extras into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
echo "==> ruff check"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy
echo "==> import cycles"
.venv/bin/python scripts/import_cycles.py
# apt_install PACKAGE: install a Debian package when running as root with apt-get (1 if not).
apt_install() {
    [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 || return 1
    echo "installing Debian's $1 package"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    apt-get install -y -qq "$1" >/dev/null
}
echo "==> PostgreSQL (the store tests start a throwaway cluster of their own)"
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    if ! apt_install postgresql; then
        echo "test: PostgreSQL's initdb is missing; install it first: sudo apt-get install postgresql" >&2
        exit 1
    fi
fi
echo "==> iproute2 (the network-fault tests put server and agents in namespaces of their own)"
if ! command -v ip >/dev/null 2>&1 && ! apt_install iproute2; then
    echo "test: no \`ip\` command: the network-fault tests will be skipped (apt-get install iproute2, run as root)" >&2
fi
echo "==> chromium (the dashboard's browser tests drive Debian's chromium with Playwright)"
if [ ! -x /usr/bin/chromium ] && ! apt_install chromium; then
    echo "test: /usr/bin/chromium is missing: the browser tests will be skipped (apt-get install chromium, run as root)" >&2
fi
echo "==> pytest"
.venv/bin/python -m pytest "$@"
