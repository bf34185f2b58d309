"""Settings of the inventory service; shared ones and env variables: services/common.py."""

from services.common import *  # noqa: F403
from services.common import broadcaster_settings, databases, installed_apps

INSTALLED_APPS = installed_apps("inventory")
DATABASES = databases("inventory")
BROADCASTER = broadcaster_settings("inventory")
