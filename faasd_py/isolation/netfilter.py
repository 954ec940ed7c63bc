"""Packet-filter rules for the `net` channel's bridge: instances reach only what the platform
means them to reach.

Without rules, an instance on the bridge reaches every host service that listens on all
addresses, through the bridge's own address (the host accepts packets for any address it has).
The worker installs one nftables table per bridge when it makes the bridge and deletes it when
it removes the bridge:

- `input`: traffic from the bridge to the host is accepted only as part of connections the
  host opened (the worker's requests to its instances and their answers), or to the TCP ports
  that `--net-allow-port` names; everything else is rejected (admin-prohibited, so that a
  function sees a clear error at once rather than a time-out);
- `forward`: nothing from the bridge is routed anywhere (instances have no default route, and
  this holds even where the host forwards).

`ruleset` is the pure core (the nft script); `install` and `remove` run `nft -f -`. nftables is
the kernel's packet filter since Linux 3.13 and Debian's default; iptables-nft writes the same
tables, so hosts that manage their firewall with iptables see these rules too.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from faasd_py.errors import NativeUnavailable

__all__ = ["install", "remove", "ruleset", "table_name"]

_FAMILY = "inet"


def table_name(bridge: str) -> str:
    """The table of `bridge`'s rules: one per bridge, so two workers never share one."""
    return "faasd_py_" + "".join(c if c.isalnum() else "_" for c in bridge)


def ruleset(bridge: str, allowed_tcp_ports: Sequence[int] = ()) -> str:
    """The nft script that replaces `bridge`'s table (declaring it first makes the delete valid
    whether or not a killed worker left one): one transaction, applied whole or not at all."""
    table = f"{_FAMILY} {table_name(bridge)}"
    iif = f'iifname "{bridge}"'
    allowed = ""
    if allowed_tcp_ports:
        ports = ", ".join(str(p) for p in sorted(set(allowed_tcp_ports)))
        allowed = f"\n        {iif} tcp dport {{ {ports} }} accept"
    return f"""table {table}
delete table {table}
table {table} {{
    chain input {{
        type filter hook input priority filter; policy accept;
        {iif} ct state established,related accept{allowed}
        {iif} reject with icmpx type admin-prohibited
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        {iif} reject with icmpx type admin-prohibited
    }}
}}
"""


def install(bridge: str, allowed_tcp_ports: Sequence[int] = ()) -> None:
    """Put `bridge`'s rules in place (replacing any a killed worker left)."""
    _nft(ruleset(bridge, allowed_tcp_ports), f"cannot install the rules of bridge {bridge}")


def remove(bridge: str) -> None:
    """Delete `bridge`'s rules, if there are any."""
    table = f"{_FAMILY} {table_name(bridge)}"
    _nft(f"table {table}\ndelete table {table}\n", f"cannot remove the rules of bridge {bridge}")


def _nft(script: str, what: str) -> None:
    nft = shutil.which("nft")
    if nft is None:
        raise NativeUnavailable(
            f"{what}: the net channel needs nftables to keep functions off the host's services "
            "(install it: apt-get install nftables)"
        )
    done = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise NativeUnavailable(f"{what}: nft said {done.stderr.strip() or done.returncode}")
