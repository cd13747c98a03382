"""``python -m hacoord`` is the ``hacoord`` command."""

import sys

from hacoord.cli import main

sys.exit(main())
