"""``python -m edgeopt.cli``."""

import sys

from edgeopt.cli.main import main

sys.exit(main())
