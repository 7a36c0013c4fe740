"""`python -m pushjobs.server` runs the `pushjobs-server` command."""

import sys

from pushjobs.server.admin.main import main

sys.exit(main())
