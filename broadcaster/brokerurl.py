"""A BROKER_URL read: the nodes it lists, whether they agree, and its passwords kept out of text.

A BROKER_URL may hold several URLs separated by ``;`` (a cluster); the password helpers
take such a value whole. They read the user part up to the last ``@`` of each URL, so a
password with an unescaped ``/``, ``#`` or ``@`` is hidden whole rather than cut where a
URL parser would cut it.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from pydantic_core import PydanticCustomError

__all__ = ["broker_passwords", "check_nodes_agree", "redact_url", "scrub", "split_urls"]

HIDDEN = "***"


def split_urls(value: str) -> list[str]:
    """The URLs of a BROKER_URL that may list several, separated by ';'."""
    return [url.strip() for url in value.split(";") if url.strip()]


def check_nodes_agree(urls: list[str]) -> None:
    """Every node of a cluster is reached the same way: one scheme, one user, one vhost.

    Raises the pydantic errors `broker_url_schemes` and `broker_url_credentials`
    (system checks broadcaster.E020 and E021), naming the entry without its password.
    """
    first = _identity(urls[0])
    for number, url in enumerate(urls[1:], 2):
        entry = f"entry {number} ({redact_url(url)})"
        identity = _identity(url)
        if identity[0] != first[0]:
            raise PydanticCustomError(
                "broker_url_schemes",
                "{entry} is {scheme}:// but entry 1 is {first}://: use one scheme for every node",
                {"entry": entry, "scheme": identity[0], "first": first[0]},
            )
        if identity[1:] != first[1:]:
            raise PydanticCustomError(
                "broker_url_credentials",
                "{entry} has other credentials or another vhost than entry 1: every node must be "
                "reached as the same user on the same vhost",
                {"entry": entry},
            )


def _identity(url: str) -> tuple[str, str, str, str]:
    # pika's defaults for what a URL leaves out: guest, guest, vhost "/".
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return parts.scheme, unquote(parts.username or "guest"), unquote(parts.password or "guest"), vhost


def redact_url(url: str) -> str:
    """Return `url` with the password of every URL in it replaced by ``***``."""
    return ";".join(_redact_one(part) for part in url.split(";"))


def broker_passwords(url: str) -> tuple[str, ...]:
    """Every password in `url` (one URL or several separated by ``;``), as written and unquoted."""
    found: list[str] = []
    for part in url.split(";"):
        _, password, _ = _userinfo(part)
        if password:
            found += [password, unquote(password)]
    # Longest first, so that a password containing another is replaced whole.
    return tuple(sorted(set(found), key=len, reverse=True))


def scrub(text: str, url: str) -> str:
    """`text` with every password of `url` replaced by ``***`` (for messages that may echo one)."""
    for password in broker_passwords(url):
        text = text.replace(password, HIDDEN)
    return text


def _userinfo(url: str) -> tuple[str, str | None, str]:
    """(what comes before the password, the password or None, what comes after it)."""
    scheme, separator, rest = url.partition("://")
    at = rest.rfind("@")
    if not separator or at < 0:
        return url, None, ""
    user, colon, password = rest[:at].partition(":")
    if not colon:
        return url, None, ""
    return f"{scheme}://{user}:", password, rest[at:]


def _redact_one(url: str) -> str:
    before, password, after = _userinfo(url)
    return url if password is None else f"{before}{HIDDEN}{after}"
