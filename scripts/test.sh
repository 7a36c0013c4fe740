#!/usr/bin/env bash
# Install pushjobs with its test extras into ./.venv (and Debian's postgresql, iproute2 and chromium
# packages when they are missing), then run the linter and the whole test suite; then the agent's
# tests again on the oldest and newest Python the agent supports (3.9 and 3.13, run_agent_tests).
# Usage: scripts/test.sh [pytest args...]     PYTHON=python3.11 picks the interpreter (default python3)
#   AGENT_PYTHONS="3.9 3.13" (the default) names the versions for the agent's second runs ("" skips);
#   PUSHJOBS_PY39=/path/to/python3.9 (PUSHJOBS_PY313, ...) names an interpreter; else it is looked
#   for on PATH and in pyenv's versions. A missing one fails the run when CI=true, else warns.
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

# is_python PATH VERSION: PATH runs CPython VERSION (e.g. 3.9).
is_python() {
    "$1" -c 'import sys; sys.exit(".".join(map(str, sys.version_info[:2])) != sys.argv[1])' "$2" \
        >/dev/null 2>&1
}
# find_python VERSION: the path of a CPython VERSION interpreter, or nothing: $PUSHJOBS_PY39
# (for 3.9; PUSHJOBS_PY313 for 3.13), else pythonVERSION on PATH, else pyenv's newest VERSION.x.
find_python() {
    local var="PUSHJOBS_PY${1/./}" root candidate
    if [ -n "${!var:-}" ]; then
        if is_python "${!var}" "$1"; then echo "${!var}"; fi
        return
    fi
    root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    for candidate in "$(command -v "python$1" || true)" \
        $(printf '%s\n' "$root"/versions/"$1".*/bin/"python$1" | sort -rV); do
        if [ -n "$candidate" ] && is_python "$candidate" "$1"; then echo "$candidate"; return; fi
    done
}
# run_agent_tests VERSION: the agent's (and its protocol code's) unit tests and in-process job
# tests on that Python, in .venv-pyXY with pushjobs' core dependencies only; then real agents
# on it (PUSHJOBS_AGENT_PYTHON) in the agent integration tests against the .venv server.
run_agent_tests() {
    local python venv="$PWD/.venv-py${1/./}"
    python="$(find_python "$1")"
    if [ -z "$python" ]; then
        MISSING_PYTHONS+=("$1")
        return
    fi
    echo "==> the agent on Python $1 ($python)"
    if [ ! -x "$venv/bin/python" ]; then "$python" -m venv "$venv"; fi
    # an editable install follows the sources; it is redone only when pyproject.toml changes
    if ! cmp -s pyproject.toml "$venv/installed-pyproject.toml"; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e . \
            pytest pytest-trio hypothesis
        cp pyproject.toml "$venv/installed-pyproject.toml"
    fi
    # no conftest: the shared one imports the server's test helpers, which need 3.11
    "$venv/bin/python" -m pytest -q -p no:cacheprovider --noconftest \
        tests/unit/agent tests/unit/protocol tests/unit/test_python_guard.py \
        tests/integration/test_agent_process.py
    # every job test, and the agent's signals and start-up errors (~1 minute on 2 cores)
    PUSHJOBS_AGENT_PYTHON="$venv/bin/python" .venv/bin/python -m pytest -q -p no:cacheprovider \
        tests/integration/test_agent_python.py tests/integration/test_agent_jobs.py \
        tests/integration/test_agent_link.py -k "$AGENT_LINK_TESTS or not test_agent_link"
}
AGENT_LINK_TESTS="stops_with_sigterm or sigint_exits_0 or sigusr1_reconfigures or permanent_error or config_error_exit_2"
MISSING_PYTHONS=()
AGENT_STARTED=$SECONDS
for version in ${AGENT_PYTHONS-3.9 3.13}; do
    run_agent_tests "$version"
done
echo "==> the agent's runs on other Pythons took $((SECONDS - AGENT_STARTED)) s"
if [ ${#MISSING_PYTHONS[@]} -gt 0 ]; then
    {
        echo "################################################################################"
        echo "#  NOT TESTED: the agent on Python ${MISSING_PYTHONS[*]}: no such interpreter found."
        echo "#  Install it (e.g. pyenv install ${MISSING_PYTHONS[0]}) or name it: PUSHJOBS_PY${MISSING_PYTHONS[0]/./}=/path/to/python"
        echo "################################################################################"
    } >&2
    if [ "${CI:-}" = "true" ]; then exit 1; fi
fi
