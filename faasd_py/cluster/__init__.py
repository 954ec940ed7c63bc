"""Several hosts: workers register in Redis with a heartbeat lease, gateways place apps on them
and talk to them over persistent connections carrying msgpack frames, packages travel through
Redis by content digest. `faasd-py up` without --cluster uses none of this."""
