"""``python -m enel …``: the ``enel`` command."""

import sys

from .cli import main

sys.exit(main())
