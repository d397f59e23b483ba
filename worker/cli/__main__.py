"""`python -m worker.cli`: the `charge-capture` command (how `run --processes` starts members)."""

import sys

from worker.cli import main

sys.exit(main())
