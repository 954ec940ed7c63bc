"""Sandboxes: namespaces and the launcher's Python side, cgroups (v2 and v1), the bridge and
veth of `net` instances and their packet filter. Imports nothing by itself."""
