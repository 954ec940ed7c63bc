"""The net channel's packet-filter rules (faasd_py.isolation.netfilter): the nft script, and a clear
error where nft is missing."""

from __future__ import annotations

import pytest

from faasd_py.errors import NativeUnavailable
from faasd_py.isolation import netfilter


def test_the_table_is_the_bridges_own() -> None:
    assert netfilter.table_name("faasd0") == "faasd_py_faasd0"
    assert netfilter.table_name("br-x.1") == "faasd_py_br_x_1"  # nft identifiers


def test_from_the_bridge_only_replies_pass_by_default() -> None:
    script = netfilter.ruleset("faasd0")
    lines = [line.strip() for line in script.splitlines()]
    # Declared, deleted, made anew: one transaction replaces whatever a killed worker left.
    assert lines[:3] == [
        "table inet faasd_py_faasd0",
        "delete table inet faasd_py_faasd0",
        "table inet faasd_py_faasd0 {",
    ]
    input_chain = lines[lines.index("chain input {") : lines.index("chain forward {")]
    assert input_chain[2:4] == [
        'iifname "faasd0" ct state established,related accept',
        'iifname "faasd0" reject with icmpx type admin-prohibited',
    ]
    assert "dport" not in script
    forward_chain = lines[lines.index("chain forward {") :]
    assert 'iifname "faasd0" reject with icmpx type admin-prohibited' in forward_chain


def test_allowed_ports_are_accepted_before_the_reject() -> None:
    lines = [line.strip() for line in netfilter.ruleset("faasd0", [8080, 6379, 8080]).splitlines()]
    accept = lines.index('iifname "faasd0" tcp dport { 6379, 8080 } accept')
    assert accept < lines.index('iifname "faasd0" reject with icmpx type admin-prohibited')


def test_without_nft_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NativeUnavailable, match="apt-get install nftables"):
        netfilter.install("faasd0")
