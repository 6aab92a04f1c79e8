"""``python -m medusa`` (and ``accelerate launch -m medusa``): the same command line as ``python
medusa.py``."""

import sys

from medusa.cli import main

if __name__ == "__main__":
    sys.exit(main())
