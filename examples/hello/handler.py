"""A sample python3-http function: greets the caller and echoes what it was sent."""

from __future__ import annotations

import json
from typing import Any


def handle(event: Any, context: Any) -> dict[str, Any]:
    name = event.query.get("name", "world")
    body = {
        "message": f"Hello, {name}!",
        "method": event.method,
        "path": event.path,
        "received_bytes": len(event.body),
        "call_id": context.call_id,
    }
    return {
        "statusCode": 200,
        "body": json.dumps(body),
        "headers": {"Content-Type": "application/json"},
    }
