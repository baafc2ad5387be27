"""`python -m mountfs.cli`: the reelfs command line."""

import sys

from mountfs.cli.main import main

sys.exit(main())
