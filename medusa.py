#!/usr/bin/env python3
"""Entry point: ``python medusa.py --help``."""

import sys

from medusa.cli import main

if __name__ == "__main__":
    sys.exit(main())
