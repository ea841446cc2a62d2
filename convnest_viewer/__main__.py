"""`python -m convnest_viewer` runs the command line."""

import sys

from convnest_viewer.cli import main

sys.exit(main())
