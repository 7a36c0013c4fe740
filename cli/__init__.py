"""pushjobs.cli: the CLI, which needs Python 3.11+.

Every way in (`pushjobs`, `python -m`, an import) passes here first, so on an older Python
the command stops with a plain message instead of a syntax or import error.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # this file runs on 3.9 too (pyproject: ruff's py39 files)
    sys.stderr.write(
        f"pushjobs: needs Python 3.11 or newer; this is Python {sys.version.split()[0]}"
        f" ({sys.executable}). Only pushjobs-agent runs on Python 3.9+.\n"
    )
    raise SystemExit(1)
