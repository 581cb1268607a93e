"""``python -m enel.cli …`` (what ``torchrun -m enel.cli train …`` and ``accelerate launch -m enel.cli`` run)."""

import sys

from . import main

sys.exit(main())
