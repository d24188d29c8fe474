"""Sentinel URLs: where a Sentinel-managed primary is found, parsed once for our clients and for kombu's.

One form for the whole platform (``MEETINGTASKS_REDIS_URL`` and each ``MEETINGTASKS_SERVICE_REDIS_URLS`` entry)::

    sentinel://[user:password@]host1:26379,host2:26379,host3:26379/<master name>/<db>
    sentinels://...                      the same over TLS (to the sentinels and to the primary)

``user:password`` authenticate to the primary; the sentinels' own password is the setting
``redis_sentinel_password`` (sentinels often run without ACLs while the data nodes have them). Kombu spells the
same thing differently (``sentinel://h1:26379;sentinel://h2:26379`` plus the ``master_name`` transport
option): :meth:`SentinelUrl.kombu_url` translates. Pure parsing: no Redis here.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

SENTINEL_SCHEMES = ("sentinel", "sentinels")
DEFAULT_SENTINEL_PORT = 26379
URL_FORM = "sentinel://[user:password@]host:port[,host:port...]/<master name>/<db>"


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0] in SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        """Parse ``url``; ``ValueError`` naming what is wrong (never echoing the password) when it is not one."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in SENTINEL_SCHEMES:
            raise ValueError(f"not a Sentinel URL: use {URL_FORM}")
        userinfo, at, hostpart = rest.rpartition("@")
        if not at:
            userinfo, hostpart = "", rest
        username, colon, password = userinfo.partition(":")
        hosts, slash, path = hostpart.partition("/")
        sentinels = tuple(_host_port(item) for item in hosts.split(",")) if hosts else ()
        if not sentinels:
            raise ValueError(f"a Sentinel URL names no sentinel host: use {URL_FORM}")
        parts = path.strip("/").split("/") if slash else []
        if not parts or not parts[0]:
            raise ValueError(f"a Sentinel URL names no master: use {URL_FORM}")
        if len(parts) > 2:
            raise ValueError(f"a Sentinel URL has too many path parts: use {URL_FORM}")
        db_text = parts[1] if len(parts) == 2 else "0"
        if not db_text.isdigit():
            raise ValueError(f"a Sentinel URL's db must be a number, not {db_text!r}: use {URL_FORM}")
        return cls(
            sentinels=sentinels,
            master_name=unquote(parts[0]),
            db=int(db_text),
            username=unquote(username) or None,
            password=unquote(password) if colon else None,
            tls=scheme == "sentinels",
        )

    def kombu_url(self) -> str:
        """The same place in kombu's spelling: one ``sentinel://`` URL per sentinel, separated by ``;``, each with
        the primary's credentials and db (kombu reads them from the first). The master name goes as the
        ``master_name`` transport option."""
        auth = ""
        if self.username or self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        return ";".join(f"sentinel://{auth}{_bracketed(host)}:{port}/{self.db}" for host, port in self.sentinels)

    @staticmethod
    def redacted_text(url: str) -> str:
        """``url`` with any password replaced by ``***``, also when it does not parse."""
        scheme, sep, rest = url.partition("://")
        userinfo, at, hostpart = rest.rpartition("@")
        if not at or ":" not in userinfo:
            return url
        return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{hostpart}"

    def without_credentials(self) -> str:
        """The URL with no ``user:password@``: where the sentinels are and which master, for options that Celery
        prints as they are (``celery report``, Flower's config page)."""
        hosts = ",".join(f"{_bracketed(host)}:{port}" for host, port in self.sentinels)
        return f"{'sentinels' if self.tls else 'sentinel'}://{hosts}/{quote(self.master_name, safe='')}/{self.db}"

    def redacted(self) -> str:
        """The URL for logs and errors: the password shown as ``***``."""
        auth = ""
        if self.username or self.password:
            auth = f"{self.username or ''}{':***' if self.password else ''}@"
        hosts = ",".join(f"{_bracketed(host)}:{port}" for host, port in self.sentinels)
        return f"{'sentinels' if self.tls else 'sentinel'}://{auth}{hosts}/{self.master_name}/{self.db}"


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, _, tail = item[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"a Sentinel URL has an empty host in {item!r}: use {URL_FORM}")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"a Sentinel URL has an invalid port in {item!r}: use {URL_FORM}")
    return host, int(port_text)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
