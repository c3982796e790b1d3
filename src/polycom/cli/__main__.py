"""``python -m polycom.cli`` (the form torchrun launches)."""

import sys

from . import main

sys.exit(main())
