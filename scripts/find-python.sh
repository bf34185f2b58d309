#!/usr/bin/env bash
# Print the path of a Python X.Y interpreter: pythonX.Y on PATH, else one that pyenv has,
# else one that `pyenv install` builds. Fails naming what is missing and how to get it.
# Usage: scripts/find-python.sh 3.13
set -euo pipefail

want=${1:?usage: find-python.sh X.Y}

is_version() {
    # pyenv shims are on PATH for every version but fail unless that version is selected.
    [ -x "$1" ] && [ "$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$want" ]
}

from_path=$(command -v "python$want" 2>/dev/null || true)
if [ -n "$from_path" ] && is_version "$from_path"; then
    echo "$from_path"
    exit 0
fi

from_pyenv() {
    local root candidate
    root=$(pyenv root)
    # The newest patch release pyenv has of X.Y (version sort, so 3.13.10 beats 3.13.9).
    for candidate in $(ls -d "$root/versions/$want".* 2>/dev/null | sort -rV); do
        if is_version "$candidate/bin/python$want"; then
            echo "$candidate/bin/python$want"
            return 0
        fi
    done
    return 1
}

if command -v pyenv >/dev/null 2>&1; then
    from_pyenv && exit 0
    echo "find-python: Python $want is not installed; running 'pyenv install $want' (several minutes)" >&2
    if pyenv install --skip-existing "$want" >&2; then
        from_pyenv && exit 0
    fi
    echo "find-python: 'pyenv install $want' failed; install Python $want and run make again" >&2
    exit 1
fi

echo "find-python: Python $want is missing: neither python$want on PATH nor pyenv to install it." >&2
echo "find-python: install Python $want (or pyenv), or name an interpreter: make test PYTHON${want/./}=/path/to/python$want" >&2
exit 1
