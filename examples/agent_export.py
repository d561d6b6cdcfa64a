"""An agent that exports a dataset only when a human approved that exact export.

export APPROVALBOT_URL=http://127.0.0.1:3000
export APPROVALBOT_TOKEN=$(approvalbot agents add export-agent --owner you@example.com)
python examples/agent_export.py customers s3://analytics-drop/customers.parquet
"""

import sys

from approvalbot.client import Denied, Expired
from approvalbot.gate import requires_approval


@requires_approval(
    "dataset.export",
    resource=lambda table, destination, **_: f"warehouse/{table}",
    params=lambda table, destination, **_: {"destination": destination, "format": "parquet"},
    justification="weekly churn analysis for the growth team",
    context={"code_path": "examples/agent_export.py", "model": "example-agent"},
    timeout=15 * 60,
)
def export(table: str, destination: str, grant: str | None = None) -> None:
    # Hand the grant to the system that performs the export: it verifies it offline
    # (see examples/executor_verify_grant.py) before moving any data.
    print(f"exporting {table} to {destination} with grant {grant[:24] if grant else None}...")


if __name__ == "__main__":
    try:
        export(sys.argv[1], sys.argv[2])
    except Denied as denied:
        sys.exit(f"export denied by {denied.approver}: {denied.reason}")
    except Expired:
        sys.exit("nobody approved the export in time")
