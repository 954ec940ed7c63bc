"""The data path between a worker and its instances: the channels (shm rings, a socketpair,
HTTP over a veth for `net`), the shared-memory rings' Python side, and the doorbell engines
(epoll, io_uring) that wake the worker's loop. Imports nothing: the sandbox runtime loads the
modules it needs from here and no more."""
