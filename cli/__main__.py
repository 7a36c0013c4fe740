"""`python -m pushjobs.cli`."""

from pushjobs.cli.main import main

raise SystemExit(main())
