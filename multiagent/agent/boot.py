"""tf-agent as tf-fleet starts it: `python -S <package>/agent/boot.py -c CONF ...`.

Without `site` an interpreter starts in well under half the CPU: no site-packages scan and
no `.pth` files (an editable install's finder alone imports pathlib, re and importlib.util).
tf-agent needs nothing outside the standard library and this package as long as its config
is the JSON that tf-fleet writes; `config.load` brings `site` in for anything else. With
hundreds of agents starting at once on a few cores, that start-up CPU is what they wait on.
"""

from __future__ import annotations

import os
import sys

# Run as a script, sys.path[0] is this file's directory; imports need the package's parent.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
if "COVERAGE_PROCESS_CONFIG" in os.environ or "COVERAGE_PROCESS_START" in os.environ:
    # Measured by coverage (the test suite), which starts in subprocesses from a .pth file.
    import site

    site.main()

from multiagent.agent.main import run  # noqa: E402 - after sys.path is set

run()
