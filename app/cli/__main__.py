"""``python -m app.cli``: the command line (see :mod:`app.cli.main`)."""

import sys

from app.cli.main import main

sys.exit(main())
