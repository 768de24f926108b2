"""``python -m livermore_nb``: the same as the ``livermore-nb`` command."""

import sys

from .cli import main

sys.exit(main())
