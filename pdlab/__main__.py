"""``python -m pdlab ...`` is ``pdlab ...``."""

import sys

from .cli import main

sys.exit(main())
