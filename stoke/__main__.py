"""``python -m stoke`` is the ``stoke`` command."""

import sys

from stoke.commands.cli import main

sys.exit(main())
