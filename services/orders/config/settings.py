"""Settings of the orders service; shared ones and env variables: services/common.py."""

import os

from services.common import *  # noqa: F403
from services.common import broadcaster_settings, databases, installed_apps

INSTALLED_APPS = installed_apps("orders")
DATABASES = databases("orders")
BROADCASTER = broadcaster_settings("orders")
# The async order view (orders/views.py) answers on these names.
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")
