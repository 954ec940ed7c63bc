"""A SandboxSpec on its way to the base zygote (spec_to_wire, msgpack, spec_from_wire) arrives
whole, with the receiver's own descriptors in place of the sender's."""

from __future__ import annotations

import resource
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.isolation.cgroups import Cgroup, Hierarchy
from faasd_py.isolation.sandbox import (
    Mount,
    SandboxSpec,
    Symlink,
    fd_pairs,
    spec_from_wire,
    spec_to_wire,
)

_PATHS = st.lists(st.from_regex(r"/[a-z]{1,8}(/[a-z0-9_.-]{1,8}){0,3}", fullmatch=True), max_size=4)


def _cgroup() -> Cgroup:
    roots = {c: Path(f"/sys/fs/cgroup/{c}") for c in ("memory", "cpu", "pids")}
    return Cgroup(Hierarchy(1, roots), {c: root / "faasd-py/run/fn-1" for c, root in roots.items()})


@given(
    targets=_PATHS,
    env=st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), st.text(max_size=20)),
    writable=st.booleans(),
    cgroup=st.booleans(),
)
def test_a_spec_survives_the_wire(
    targets: list[str], env: dict[str, str], writable: bool, cgroup: bool
) -> None:
    spec = SandboxSpec(
        argv=["/usr/bin/python3", "-c", "pass"],
        root_dir=Path("/run/faasd/.root"),
        mounts=[*(Mount.bind(t, writable=writable) for t in targets), Mount.empty("/hidden")],
        symlinks=[Symlink("/lib", "usr/lib")],
        env=env,
        cwd="/tmp",
        hostname="fn-1",
        rlimits={resource.RLIMIT_CORE: (0, 0), resource.RLIMIT_NOFILE: (64, 128)},
        tmp_size=1 << 20,
        cgroup=_cgroup() if cgroup else None,
        stdout=7,
        pass_fds=[9],
    )
    wire = msgpack.unpackb(msgpack.packb(spec_to_wire(spec)))
    received = spec_from_wire(wire, [(21, 1), (22, 9)])
    assert list(received.argv) == list(spec.argv) and dict(received.env) == dict(spec.env)
    for field in ("cwd", "hostname", "tmp_size", "uid", "gid", "root_dir"):
        assert getattr(received, field) == getattr(spec, field), field
    assert list(received.mounts) == list(spec.mounts)
    assert list(received.symlinks) == list(spec.symlinks)
    assert dict(received.rlimits) == dict(spec.rlimits)
    if cgroup:
        assert received.cgroup is not None and spec.cgroup is not None
        assert received.cgroup.paths == spec.cgroup.paths
        assert received.cgroup.version == 1
    else:
        assert received.cgroup is None
    # The sender's descriptors stay behind; the receiver's take their numbers inside.
    assert fd_pairs(received) == [(21, 1), (22, 9)]


def test_a_malformed_wire_spec_is_refused() -> None:
    spec = SandboxSpec(argv=["/bin/true"], root_dir=Path("/r"))
    wire = spec_to_wire(spec)
    del wire["mounts"]
    with pytest.raises(KeyError):
        spec_from_wire(wire, [])
