#!/usr/bin/env bash
# mysqlclient (a dev dependency, and the `mysql` extra) compiles against MariaDB's or MySQL's
# client library, found with pkg-config. Install both on Debian as root when they are missing;
# elsewhere say what to install.
set -euo pipefail

if command -v pkg-config >/dev/null && { pkg-config --exists mysqlclient || pkg-config --exists mariadb; }; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "mysql-build-deps: installing libmariadb-dev and pkg-config"
    apt-get install -y -qq libmariadb-dev pkg-config >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq libmariadb-dev pkg-config >/dev/null; }
    exit 0
fi
echo "mysql-build-deps: mysqlclient needs pkg-config and the MariaDB/MySQL client headers" >&2
echo "  (Debian/Ubuntu: sudo apt-get install libmariadb-dev pkg-config; macOS: brew install mysql-client pkg-config)" >&2
exit 1
