#!/usr/bin/env python
"""Run a Django command in the inventory service: `manage.py COMMAND [ARGS]`."""

import os
import sys
from pathlib import Path

SERVICE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SERVICE_DIR.parents[1]


def main() -> None:
    # Monorepo layout: the service's own packages (config, inventory) and the shared ones
    # (schemas, services.common, and broadcaster when it is not installed) all import.
    sys.path[:0] = [str(SERVICE_DIR), str(REPO_ROOT)]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
