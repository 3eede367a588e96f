"""`python -m hw_sim --dir DIR`: the simulated room as its own process (hw_sim.process)."""

import sys

from hw_sim.process import main

sys.exit(main())
