"""Which next-page links a listing of runs may follow, and how each resolves.

Pages continue through ``_links.next.href``, which Adobe writes relative to the service base
(``/runs?continuationToken=…`` means ``{base}/runs?continuationToken=…``). The access token goes
with every request, so :func:`resolve_next` follows an absolute link only to the base URL's own
scheme, host and port, and never one that carries credentials. A link that cannot be read or
may not be followed raises :class:`~bulkretry._exceptions.ListingHalted`: the listing stops
rather than drop pages or send the token elsewhere.
"""

from __future__ import annotations

from typing import Any

from yarl import URL

from .._exceptions import ListingHalted
from .._text import one_line

__all__ = ["next_href", "resolve_next"]

#: How much of a refused link a message quotes.
_LINK_CHARS = 200


def _quoted(href: str) -> str:
    """Quote a link a server wrote, as one short safe line."""
    return one_line(repr(href), _LINK_CHARS)


def resolve_next(base: URL, href: str) -> URL:
    """Return the URL of the next page that ``href`` links to, relative to ``base``.

    A link starting with ``/`` is relative to the service base, as Adobe writes them, unless it
    already starts with the base's path; an absolute (or ``//host``) link must stay on the
    base's scheme, host and port. Raise :class:`ListingHalted` for any other link.
    """
    try:
        link = URL(href.strip())
    except (ValueError, TypeError) as exc:
        raise ListingHalted(
            f"the next-page link {_quoted(href)} is not a URL ({one_line(str(exc))})"
        ) from None
    if link.raw_user is not None or link.raw_password is not None:
        raise ListingHalted("the next-page link carries credentials (user:password@); refused")
    if link.host is not None:
        resolved = base.join(link)
        if (resolved.scheme, resolved.host, resolved.port) != (base.scheme, base.host, base.port):
            where = one_line(f"{resolved.scheme}://{resolved.raw_authority}", _LINK_CHARS)
            raise ListingHalted(
                f"the next-page link points to {where}, not to {base.origin()}; "
                "the access token is never sent to another host"
            )
        return resolved.with_fragment(None)
    if link.scheme:
        raise ListingHalted(f"the next-page link {_quoted(href)} is not an http(s) URL")
    base_path = base.raw_path.rstrip("/")
    path = link.raw_path
    if not path:
        path = f"{base_path}/runs"
    elif not path.startswith("/"):
        path = f"{base_path}/{path}"
    elif not (base_path and (path == base_path or path.startswith(base_path + "/"))):
        path = base_path + path
    return URL.build(
        scheme=base.scheme,
        authority=base.raw_authority,
        path=path,
        query_string=link.raw_query_string,
        encoded=True,
    )


def next_href(body: dict[str, Any]) -> str | None:
    """Return the next page's link, or None at the end; refuse a link that cannot be read."""
    links = body.get("_links")
    if not isinstance(links, dict):
        return None
    nxt = links.get("next")
    if nxt is None:
        return None
    href = nxt.get("href") if isinstance(nxt, dict) else nxt
    if not isinstance(href, str):
        raise ListingHalted(f"cannot read the next-page link {one_line(repr(nxt))}")
    # An empty link would mean the unfiltered /runs: take it as the end, never follow it.
    return href if href.strip() else None
