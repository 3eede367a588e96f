"""`python -m hw_sim --dir DIR`: the simulated room as its own process (hw_sim.process);
`python -m hw_sim ctl --dir DIR ...` drives a running one (hw_sim.cli)."""

import sys

from hw_sim.cli import main

sys.exit(main())
