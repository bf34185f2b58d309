#!/usr/bin/env python
"""manage.py of the throwaway Django project the integration tests run as services."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[2])]  # this project, then the repository root

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relay.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
