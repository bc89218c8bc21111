"""Which hosts an outgoing request may reach: the guard of the outgoing webhooks
against server-side request forgery (a merchant's URL making our workers call
Redis on 127.0.0.1, a cloud metadata service on 169.254.169.254, or anything on
the private network).

Public means a globally routable unicast address. Refused: unspecified,
loopback, link-local (169.254/16, fe80::/10), multicast, private (10/8,
172.16/12, 192.168/16), unique-local (fc00::/7), shared (100.64/10), site-local,
reserved and the other special-purpose ranges, judged on the IPv4 address inside
an IPv4-mapped, 6to4 or NAT64 IPv6 address.

Two checks, because a name can only be judged once it is resolved:

- ``host_problem`` judges a URL's host without DNS (an API request must not wait
  on a resolver): IP literals, including inet_aton's short forms (``127.1``,
  ``2130706433``, ``0x7f.1``), and names that only resolve inside a network.
- ``connect_public`` resolves once, refuses if any answer is not public, and
  connects to the answers it vetted, so a name that re-resolves to another address
  between the check and the connection (DNS rebinding) cannot get past it.
"""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the IPv4 address is the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use translation prefix (RFC 8215)

# Names that resolve only inside a network (RFC 6761, RFC 6762, RFC 8375, ICANN's .internal).
_LOCAL_NAMES = ("localhost", "localhost.localdomain")
_LOCAL_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".home.arpa")


class AddressRefused(Exception):
    """A destination the guard refuses; the message says which address and why,
    e.g. ``refused: 10.0.0.5 is a private address``."""


def _kind(ip: IPAddress) -> str | None:
    """What makes ``ip`` not public ("a private address"), or None when it is public."""
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if any(ip in net for net in _RFC1918):
        return "a private address"
    if ip in _UNIQUE_LOCAL:
        return "a unique-local (private) address"
    if ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.version == 6 and ip.is_site_local:
        return "a site-local address"
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private or not ip.is_global:
        return "a special-purpose (non-public) address"
    return None


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_kind(address: str | IPAddress) -> str | None:
    """What makes ``address`` not public (``"a private address"``, ``"a loopback
    address (IPv4 127.0.0.1)"`` for ``::ffff:127.0.0.1``), or None when it is public."""
    ip = ipaddress.ip_address(str(address).split("%", 1)[0])  # an IPv6 zone does not change the address
    inner = _embedded_v4(ip)
    kind = _kind(inner if inner is not None else ip)
    if kind is None:
        return None
    return kind + (f" (IPv4 {inner})" if inner is not None else "")


def address_problem(address: str | IPAddress, *, shown: str | None = None) -> str | None:
    """Why ``address`` is not public (``"10.0.0.5 is a private address"``), or None.
    ``shown``: how the message names the address (default: as given)."""
    kind = address_kind(address)
    return None if kind is None else f"{shown or address} is {kind}"


def ip_literal(host: str) -> IPAddress | None:
    """The address a URL's host names without DNS: an IPv4 or IPv6 literal, or one
    of the IPv4 forms the C resolver also reads as numbers (``127.1``, ``2130706433``,
    ``0x7f.0.0.1``, ``0177.0.0.1``). None for a name."""
    text = host.split("%", 1)[0].rstrip(".")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def host_problem(host: str) -> str | None:
    """Why a URL's host (as ``urlsplit(url).hostname`` gives it) is not public,
    judged without DNS: an IP literal by its address; a name that resolves only
    inside a network (``localhost``, ``*.localhost``, ``*.local``, ``*.internal``,
    ``*.home.arpa``, ``*.localdomain``, or a single label such as ``redis``).
    None for any other name: it is judged when it is resolved (``connect_public``)."""
    try:
        ascii_host = host.encode("idna").decode("ascii")  # as the resolver will be asked: "ｌｏｃａｌｈｏｓｔ" is localhost
    except UnicodeError:
        ascii_host = host
    literal = ip_literal(ascii_host)
    if literal is not None:
        numeric = str(literal) == host or ":" in host  # as written, or a short form such as 127.1
        return address_problem(literal, shown=host if numeric else f"{host} ({literal})")
    name = ascii_host.lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        return f"{host} is a local host name"
    if "." not in name:
        return f"{host} is a single-label host name, which resolves only inside a network"
    return None


def resolve_public(host: str, port: int | None) -> list[tuple]:
    """``getaddrinfo(host, port)`` for a TCP connection, once; raises AddressRefused
    if any answer is not public (a name with one private address among public
    ones is refused: the connection could go to any of them)."""
    answers = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    if not answers:
        raise OSError("getaddrinfo returns an empty list")
    for *_, sockaddr in answers:
        kind = address_kind(sockaddr[0])
        if kind is None:
            continue
        if ip_literal(host) is not None:  # no name was looked up: the URL named this address
            raise AddressRefused(f"refused: {sockaddr[0]} is {kind}")
        raise AddressRefused(f"refused: {host} resolves to {sockaddr[0]}, {kind}")
    return answers


def connect_public(address: tuple[str, int], timeout=socket._GLOBAL_DEFAULT_TIMEOUT,
                   source_address=None) -> socket.socket:
    """``socket.create_connection`` that goes only to public addresses: the host
    is resolved once (``resolve_public``) and the connection is made to those very
    answers, in order, never to a second resolution. Raises AddressRefused, or
    the last connection error."""
    host, port = address
    error: OSError | None = None
    for family, type_, proto, _, sockaddr in resolve_public(host, port):
        sock = None
        try:
            sock = socket.socket(family, type_, proto)
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            error = exc
            if sock is not None:
                sock.close()
    try:
        raise error
    finally:
        error = None  # no reference cycle through the traceback (as socket.create_connection)
