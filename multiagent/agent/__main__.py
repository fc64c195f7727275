"""`python -m multiagent.agent`."""

from __future__ import annotations

import sys

from multiagent.agent.main import main

sys.exit(main())
