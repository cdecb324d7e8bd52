"""``python -m camexp.report``: the same command as ``camexp-report``."""

import sys

from camexp.report.cli import main

sys.exit(main())
