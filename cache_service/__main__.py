"""`python -m cache_service`: run one node (same options as `statecache serve`)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
