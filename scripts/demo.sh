#!/usr/bin/env bash
# The pushjobs demo: a server and three agents on this machine (127.0.0.1), running real jobs
# through the `pushjobs` CLI. Creates ./.venv and installs pushjobs into it on first use.
#
# Usage: scripts/demo.sh [--no-install] [--dir DIR] [--no-color] [--keep-running]
#   --no-install             use .venv as it is (no pip); also PUSHJOBS_DEMO_NO_INSTALL=1
#   --dir DIR                keep data and logs in DIR, new or empty (default: a temporary one)
#   --keep-running           leave the server and agents up afterwards, for `pushjobs ui`
#   PUSHJOBS_DEMO_PYTHON=PY  use interpreter PY, which already has pushjobs[server]; no venv
#   PYTHON=python3.11        the interpreter that creates .venv (default: python3)
#
# Ctrl-C at any point stops every process the demo started.
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
if [ "${PUSHJOBS_DEMO_NO_INSTALL:-}" = "1" ]; then install=0; fi
args=()
for arg in "$@"; do
    case "$arg" in
        --no-install) install=0 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) args+=("$arg") ;;
    esac
done

if [ -n "${PUSHJOBS_DEMO_PYTHON:-}" ]; then
    py="$PUSHJOBS_DEMO_PYTHON"
else
    base_python="${PYTHON:-python3}"
    if ! command -v "$base_python" >/dev/null 2>&1; then
        echo "demo: $base_python not found; install Python 3.11 or newer (apt-get install python3)" >&2
        exit 1
    fi
    if ! "$base_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "demo: pushjobs needs Python 3.11 or newer ($base_python is $("$base_python" -V 2>&1))" >&2
        exit 1
    fi
    py=.venv/bin/python
    if [ ! -x "$py" ]; then
        echo "==> Creating .venv"
        if ! "$base_python" -m venv .venv; then
            echo "demo: could not create .venv; on Debian: apt-get install python3-venv" >&2
            rm -rf .venv
            exit 1
        fi
        install=1
    fi
    # Skip pip when this pyproject.toml was already installed into .venv and still imports.
    stamp=.venv/.pushjobs-demo-installed
    wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ "$install" = "1" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] \
        && "$py" -c 'import pushjobs.server.admin.main, pushjobs.agent.main, pushjobs.cli.main, hypercorn' \
            >/dev/null 2>&1; then
        install=0
    fi
    if [ "$install" = "1" ]; then
        echo "==> Installing pushjobs into .venv (pip install -e '.[server]')"
        rm -f "$stamp"
        "$py" -m pip install --quiet --disable-pip-version-check -e '.[server]'
        echo "$wanted" > "$stamp"
    fi
fi

exec "$py" scripts/demo.py ${args[@]+"${args[@]}"}
