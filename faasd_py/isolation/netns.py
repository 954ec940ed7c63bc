"""The `net` channel's network: a bridge on the host and a veth pair per sandboxed instance.

    host netns                                   instance's netns (made by the sandbox launcher)
    faasd0 (bridge) 10.62.0.1/16 ── fdh1a2b3c4d ═══ eth0 10.62.0.7/16, lo
                                 ── fdh5e6f7a8b ═══ eth0 10.62.0.8/16, lo   (another instance)

`AddressPool` is the pure core: the subnet's first address goes to the bridge, instances get the
others round robin (a freed address is reused last, so a neighbour entry the host still holds
for it has long gone stale). `BridgeNetwork` is the netlink edge (pyroute2): it makes the
bridge on first use, removes it at `close`, and `attach(pid)` gives the network namespace of
process `pid` its veth end, its address and a MAC derived from it (as Docker does, so a reused
address never meets a stale neighbour entry).

What an instance can reach, and why:

- the bridge's address, but of the host's services only the TCP ports `--net-allow-port` names
  (none by default): packet-filter rules for the bridge (faasd_py.isolation.netfilter, nftables)
  reject the rest, while the worker's own connections to its instances pass;
- nothing else: no default route (with one the host would accept packets for every address
  it owns, the weak host model, and forward them off the host where forwarding is on), no
  other instance (bridge ports are isolated), no IPv6 (off on the bridge and the host ends),
  and its own loopback is its own: the gateway's 127.0.0.1 port is not the instance's.
- it cannot change any of this: the sandbox drops every capability before it runs the runtime.

Ownership: the bridge carries `faasd-py pid=N start=T` in its alias. A worker that finds the
bridge of a dead worker (killed with SIGKILL) removes it; a bridge of a live worker, or one
faasd-py did not make, is an error that names the option to pick another (`--net-bridge`).

Everything here blocks on netlink: the worker calls it from a thread (`asyncio.to_thread`).
pyroute2 is imported here only, so a worker without `net` functions never loads it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd_py.config import DEFAULT_NET_BRIDGE as DEFAULT_BRIDGE
from faasd_py.config import DEFAULT_NET_SUBNET as DEFAULT_SUBNET
from faasd_py.errors import NativeUnavailable
from faasd_py.isolation import netfilter

__all__ = [
    "DEFAULT_BRIDGE",
    "DEFAULT_SUBNET",
    "AddressPool",
    "AddressStatistics",
    "Attachment",
    "BridgeNetwork",
    "NetworkUnavailable",
    "mac_for",
]

_ALIAS_PREFIX = "faasd-py"
_INSIDE_NAME = "eth0"


class NetworkUnavailable(NativeUnavailable):
    """The net channel's network cannot be made here (not root, bridge taken, bad subnet)."""


# --- the pure core: addresses ------------------------------------------------------------------


@dataclass(frozen=True)
class AddressStatistics:
    capacity: int  # addresses instances can get (the subnet's hosts but the bridge's)
    in_use: int


class AddressPool:
    """The addresses of one subnet: the first host address is the bridge's (`gateway`); the
    others go to instances round robin, so the one freed most recently is reused last."""

    def __init__(self, subnet: ipaddress.IPv4Network) -> None:
        if subnet.num_addresses < 4:
            raise ValueError(f"subnet {subnet} is too small: it needs room for a bridge and hosts")
        self.subnet = subnet
        self.gateway = subnet.network_address + 1
        self._first = int(self.gateway) + 1
        self._count = subnet.num_addresses - 3  # no network, gateway or broadcast address
        self._next = 0
        self._in_use: set[int] = set()

    def allocate(self) -> ipaddress.IPv4Address:
        if len(self._in_use) >= self._count:
            raise NetworkUnavailable(
                f"all {self._count} addresses of {self.subnet} are in use; choose a larger "
                "subnet with --net-subnet"
            )
        while self._next in self._in_use:
            self._next = (self._next + 1) % self._count
        offset, self._next = self._next, (self._next + 1) % self._count
        self._in_use.add(offset)
        return ipaddress.IPv4Address(self._first + offset)

    def release(self, address: ipaddress.IPv4Address) -> None:
        self._in_use.discard(int(address) - self._first)

    def statistics(self) -> AddressStatistics:
        return AddressStatistics(capacity=self._count, in_use=len(self._in_use))


def mac_for(address: ipaddress.IPv4Address) -> str:
    """A locally administered unicast MAC that encodes the address (02:fd:a:b:c:d)."""
    return "02:fd:" + ":".join(f"{b:02x}" for b in address.packed)


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise NetworkUnavailable(f"--net-subnet {text!r} is not an IPv4 subnet: {exc}") from None


def owner_alias(pid: int) -> str:
    return f"{_ALIAS_PREFIX} pid={pid} start={_start_time(pid)}"


def alias_owner_alive(alias: str) -> bool:
    """Whether the worker named by a bridge's alias still runs (the same process: its pid and
    its start time, so a reused pid does not count)."""
    fields = dict(part.split("=", 1) for part in alias.split()[1:] if "=" in part)
    try:
        pid = int(fields.get("pid", ""))
    except ValueError:
        return False
    return _start_time(pid) == fields.get("start")


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command may hold spaces and parentheses: fields count from the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


# --- the netlink edge --------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """One instance's place on the bridge."""

    address: ipaddress.IPv4Address
    host_ifname: str


class BridgeNetwork:
    """The bridge `name` with `subnet`, made on the first `attach` and removed by `close`.
    Safe to call from several threads."""

    def __init__(
        self,
        name: str = DEFAULT_BRIDGE,
        subnet: str = DEFAULT_SUBNET,
        allowed_ports: Sequence[int] = (),
    ) -> None:
        if not 0 < len(name) <= 15 or "/" in name or " " in name or '"' in name:
            raise NetworkUnavailable(f"--net-bridge {name!r} is not a valid interface name")
        self.name = name
        self.allowed_ports = tuple(allowed_ports)  # host TCP ports instances may reach
        self.pool = AddressPool(parse_subnet(subnet))
        self._lock = threading.Lock()
        # pyroute2's IPRoute keeps an event loop per thread and closes only the closing
        # thread's: each call here opens one and closes it in the thread it runs in.
        self._up = False
        self._index = 0

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.pool.gateway

    # --- the bridge ----------------------------------------------------------------------------

    def ensure(self) -> None:
        """Make the bridge unless this worker already has."""
        with self._lock:
            if not self._up:
                with _host_iproute() as ipr:
                    self._index = self._create_bridge(ipr)
                self._up = True

    def _create_bridge(self, ipr: Any) -> int:
        self._remove_stale_bridge(ipr)
        self._check_subnet_free(ipr)
        try:
            ipr.link("add", ifname=self.name, kind="bridge")
        except Exception as exc:  # pyroute2's NetlinkError, an OSError
            raise NetworkUnavailable(f"cannot create bridge {self.name}: {exc}") from None
        (index,) = ipr.link_lookup(ifname=self.name)
        ipr.link("set", index=index, ifalias=owner_alias(os.getpid()))
        _disable_ipv6(self.name)
        prefix = self.pool.subnet.prefixlen
        ipr.addr("add", index=index, address=str(self.gateway), prefixlen=prefix)
        try:  # before the bridge is up: no instance ever sees the host unfiltered
            netfilter.install(self.name, self.allowed_ports)
        except NativeUnavailable as exc:
            ipr.link("del", index=index)
            raise NetworkUnavailable(exc.message) from None
        ipr.link("set", index=index, state="up")
        return int(index)

    def _remove_stale_bridge(self, ipr: Any) -> None:
        found = ipr.link_lookup(ifname=self.name)
        if not found:
            return
        (link,) = ipr.link("get", index=found[0])
        alias = link.get("IFLA_IFALIAS") or ""
        if not alias.startswith(_ALIAS_PREFIX):
            raise NetworkUnavailable(
                f"interface {self.name} exists and faasd-py did not make it; choose another "
                "bridge name with --net-bridge"
            )
        if alias_owner_alive(alias):
            raise NetworkUnavailable(
                f"bridge {self.name} belongs to a running worker ({alias}); choose another "
                "bridge name with --net-bridge and another subnet with --net-subnet"
            )
        ipr.link("del", index=found[0])  # left by a worker that was killed

    def _check_subnet_free(self, ipr: Any) -> None:
        for msg in ipr.get_addr(family=2):
            address = ipaddress.IPv4Address(msg.get("IFA_ADDRESS"))
            if address in self.pool.subnet:
                raise NetworkUnavailable(
                    f"subnet {self.pool.subnet} is already used on this host ({address}); "
                    "choose another with --net-subnet"
                )

    def close(self) -> None:
        """Remove the bridge and every veth still on it (instances have stopped by now)."""
        with self._lock:
            if not self._up:
                return
            self._up = False
            with _host_iproute() as ipr:
                # A veth goes with its namespace, but the kernel tears namespaces down in the
                # background: some may still hang on the bridge after their instances exited.
                for index in ipr.link_lookup(master=self._index):
                    with contextlib.suppress(Exception):  # went away meanwhile
                        ipr.link("del", index=index)
                with contextlib.suppress(Exception):
                    ipr.link("del", index=self._index)
            with contextlib.suppress(NativeUnavailable):  # gone with a killed worker's, or nft
                netfilter.remove(self.name)

    # --- instances -----------------------------------------------------------------------------

    def attach(self, pid: int) -> Attachment:
        """Give the network namespace of process `pid` a veth on the bridge: `eth0` with the
        next address, up, with lo; the host end on the bridge, isolated from the others."""
        self.ensure()
        with self._lock:
            address = self.pool.allocate()
            tag = secrets.token_hex(4)
            host, peer = f"fdh{tag}", f"fdp{tag}"
            try:
                with _host_iproute() as ipr:
                    self._add_veth(ipr, host, peer, pid)
            except BaseException:
                self.pool.release(address)
                raise
        try:
            _configure_inside(pid, peer, address, self.pool.subnet.prefixlen)
        except BaseException:
            self.detach(Attachment(address, host), delete=True)
            raise
        return Attachment(address, host)

    def _add_veth(self, ipr: Any, host: str, peer: str, pid: int) -> None:
        try:
            ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer, "net_ns_pid": pid})
        except Exception as exc:
            raise NetworkUnavailable(f"cannot give process {pid} a veth: {exc}") from None
        (index,) = ipr.link_lookup(ifname=host)
        _disable_ipv6(host)
        ipr.link("set", index=index, master=self._index)
        ipr.brport("set", index=index, isolated=1)
        ipr.link("set", index=index, state="up")

    def detach(self, attachment: Attachment, *, delete: bool = False) -> None:
        """Give the address back. The veth goes with the instance's namespace when its last
        process exits; `delete` removes it now (a launch that failed half way)."""
        with self._lock:
            self.pool.release(attachment.address)
            if delete and self._up:
                with _host_iproute() as ipr:
                    _delete_link(ipr, attachment.host_ifname)


def _host_iproute() -> Any:
    try:
        from pyroute2 import IPRoute
    except ImportError as exc:
        raise NetworkUnavailable(f"the net channel needs pyroute2: {exc}") from None
    return IPRoute()


def _delete_link(ipr: Any, name: str) -> None:
    for index in ipr.link_lookup(ifname=name):
        with contextlib.suppress(Exception):  # went away meanwhile
            ipr.link("del", index=index)


def _configure_inside(pid: int, peer: str, address: ipaddress.IPv4Address, prefix: int) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netns import setns

    # setns changes the network namespace of this thread only: open a netlink socket there
    # (sockets stay in the namespace they were made in), then come straight back.
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target)
        try:
            ipr = IPRoute()
        finally:
            try:
                setns(home)
            except BaseException:
                # This thread would go on in the instance's network, where nobody expects it.
                os.abort()
    finally:
        os.close(target)
        os.close(home)
    try:
        (index,) = ipr.link_lookup(ifname=peer)
        ipr.link("set", index=index, ifname=_INSIDE_NAME, address=mac_for(address))
        ipr.addr("add", index=index, address=str(address), prefixlen=prefix)
        ipr.link("set", index=index, state="up")
        for lo in ipr.link_lookup(ifname="lo"):
            ipr.link("set", index=lo, state="up")
    finally:
        ipr.close()


def _disable_ipv6(ifname: str) -> None:
    path = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    with contextlib.suppress(FileNotFoundError):  # a kernel without IPv6
        path.write_text("1")
