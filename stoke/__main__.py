"""``python -m stoke`` is the ``stoke`` command."""

import sys

from stoke.cli import main

sys.exit(main())
