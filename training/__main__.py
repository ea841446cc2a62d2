"""`python -m training`: the training commands."""

import sys

from training.cli import main

sys.exit(main())
