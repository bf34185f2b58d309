"""Settings of the orders service; shared ones and env variables: services/common.py."""

from services.common import *  # noqa: F403
from services.common import broadcaster_settings, databases, installed_apps

INSTALLED_APPS = installed_apps("orders")
DATABASES = databases("orders")
BROADCASTER = broadcaster_settings("orders")
