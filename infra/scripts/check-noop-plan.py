"""Fail unless a `terraform show -json` plan changes nothing.

One difference is tolerated and printed, because it is moto's, not ours: moto 5.2 ignores the
``Tags`` parameter of Kinesis ``CreateStream``, so the stream's tags show as an in-place update.
Any other change (or a tag change on any other resource) fails.
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        plan = json.load(fh)
    bad, tolerated = [], []
    for rc in plan.get("resource_changes", []):
        actions = rc["change"]["actions"]
        if actions in (["no-op"], ["read"]):
            continue
        before, after = rc["change"].get("before") or {}, rc["change"].get("after") or {}
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if (
            rc["type"] == "aws_kinesis_stream"
            and actions == ["update"]
            and set(changed) <= {"tags", "tags_all"}
        ):
            tolerated.append(rc["address"])
        else:
            bad.append(f"{rc['address']}: {actions} {changed}")
    for addr in tolerated:
        print(f"    tolerated (moto ignores CreateStream tags): {addr} tags")
    if bad:
        print("second plan is not empty:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    print("    second plan: no changes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
