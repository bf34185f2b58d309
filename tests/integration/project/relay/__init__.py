"""One Django project and app in one package: a service the integration tests configure through env."""
