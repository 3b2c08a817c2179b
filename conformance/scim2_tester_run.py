"""Runs scim2-tester's check_server() (every tag) against a live SCIM base URL.

Prints one line per check and ends with `scim2-tester: N passed, M failed`. SKIPPED counts as
a failure (scim2-cli does the same): a skipped check is a feature the server failed to offer.
Usage: python scim2_tester_run.py BASE_URL  (token in SCIM_TOKEN)
With SCIM_TESTER_TRACE=1, every request and response (method, URL, status, bodies; no headers,
so never the token) goes to stderr, to see what a failing check sent and got.
"""

import os
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server


def _trace_request(request) -> None:
    body = request.content.decode("utf-8", "replace")
    print(f">> {request.method} {request.url} {body}", file=sys.stderr)


def _trace_response(response) -> None:
    response.read()
    print(f"<< {response.status_code} {response.text}", file=sys.stderr)


def main() -> int:
    base_url = sys.argv[1]
    token = os.environ["SCIM_TOKEN"]
    hooks = {}
    if os.environ.get("SCIM_TESTER_TRACE") == "1":
        hooks = {"request": [_trace_request], "response": [_trace_response]}
    http = Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30, event_hooks=hooks)
    client = SyncSCIMClient(http)
    client.discover()
    results = check_server(client)
    passed = 0
    failed = 0
    for r in results:
        ok = r.status == Status.SUCCESS
        passed += ok
        failed += not ok
        line = f"{r.status.name:<9} {r.title}"
        if not ok:
            line += f"\n          {r.reason}"
        print(line)
    print(f"scim2-tester: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
