"""`python -m pushjobs.server` runs the `pushjobs-server` command."""

import sys

from .admin import main

sys.exit(main())
