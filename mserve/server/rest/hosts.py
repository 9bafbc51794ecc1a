"""Which ``Host`` a request may name, so a web page cannot reach the server through DNS
rebinding: the page's own name, made to resolve to 127.0.0.1, arrives as the Host.

Allowed: loopback names and addresses, the address the server is bound to, any IP address
when it is bound to all of them (a name is what rebinding needs; an address cannot be
rebound), and the names given with ``--allowed-host`` ('*' allows any). A request without a
Host (HTTP/1.0) comes from no browser and is allowed.
"""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
MAX_REMEMBERED = 256  # verdicts kept per Host value; a client cannot grow this without bound


class HostCheck:
    def __init__(self, bound: str, allowed: tuple[str, ...]) -> None:
        self.any = "*" in allowed
        self.names = {name.lower().rstrip(".") for name in allowed} | LOOPBACK_NAMES
        self.bound = bound.lower()
        self.any_address = _unspecified(bound)
        self.verdicts: dict[bytes, bool] = {}
        # Host values already allowed (no Host too): what the fast path tests, without a call
        self.known: set[bytes | None] = {None}

    def __call__(self, host: bytes | None) -> bool:
        if host is None or self.any:
            return True
        verdict = self.verdicts.get(host)
        if verdict is None:
            verdict = self._allowed(host.decode("latin-1").lower())
            if len(self.verdicts) < MAX_REMEMBERED:
                self.verdicts[host] = verdict
                if verdict:
                    self.known.add(host)
        return verdict

    def _allowed(self, host: str) -> bool:
        name = _without_port(host)
        if name in self.names or name.rstrip(".") in self.names or name == self.bound:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or self.any_address or str(address) == self.bound


def _without_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[1:].partition("]")[0]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:  # a name
        return False
