"""`python -m services.dev`: the `workbench-dev` command."""

import sys

from services.dev.cli import main

sys.exit(main())
