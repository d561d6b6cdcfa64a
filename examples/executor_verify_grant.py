"""The system that performs an action checks the agent's grant first, offline, then redeems it once.

    curl -s localhost:3000/v1/keys \
      | python -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["pem"])' > approvalbot.pub.pem
    EXECUTOR_TOKEN=$(approvalbot executors add exporter --agent etl-bot)
    APPROVALBOT_AGENT_ID=agt_... APPROVALBOT_TOKEN=$EXECUTOR_TOKEN \
      python examples/executor_verify_grant.py approvalbot.pub.pem "$GRANT"

Offline verification needs only the public key. It checks `sub`: a grant is
issued to one agent, and this executor acts only for the agent it serves (a grant
another agent obtained is not a licence to act here). Redeeming (optional,
online) makes the grant single-use: a second redemption is refused with 409.
Only the agent's own token or an executor token bound to it may redeem.

Revocation: when an admin revokes the agent, its unexpired grants are revoked
too. Redeeming one answers 409 `grant_revoked`; an executor that only verifies
offline fetches `GET /v1/grants/revoked` (any valid token) as often as it
fetches the public key, and refuses a grant whose `jti` is listed there.
"""

import os
import sys

import httpx

from approvalbot.audit.grants import GrantError, verify_grant


def server() -> str:
    return os.environ.get("APPROVALBOT_URL", "http://127.0.0.1:3000")


def revoked_grant_ids() -> set[str]:
    """The revoked, unexpired grants; cache this for as long as you cache the public key."""
    answer = httpx.get(
        f"{server()}/v1/grants/revoked", headers={"Authorization": f"Bearer {os.environ['APPROVALBOT_TOKEN']}"}
    )
    answer.raise_for_status()
    return {entry["jti"] for entry in answer.json()["revoked"]}


def perform_export(grant: str, public_pem: str, table: str, destination: str) -> None:
    try:
        claims = verify_grant(
            grant,
            public_pem,
            action="dataset.export",
            resource=f"warehouse/{table}",
            params={"destination": destination, "format": "parquet"},
        )
    except GrantError as exc:
        sys.exit(f"refusing to export: {exc.code}")
    if claims["sub"] != os.environ["APPROVALBOT_AGENT_ID"]:
        sys.exit("refusing to export: the grant was issued to another agent")
    if claims["jti"] in revoked_grant_ids():  # the offline check: the agent was revoked after approval
        sys.exit("refusing to export: grant_revoked")
    # Single use: redeem before acting (with an executor token bound to the agent, or the agent's own).
    answer = httpx.post(
        f"{server()}/v1/grants/consume",
        json={"grant": grant},
        headers={"Authorization": f"Bearer {os.environ['APPROVALBOT_TOKEN']}"},
    )
    if answer.status_code != 200:
        sys.exit(f"grant not redeemable: {answer.json()['error']['code']}")
    print(f"exporting {table} to {destination}, approved by {', '.join(claims['approvers'])}")


if __name__ == "__main__":
    with open(sys.argv[1]) as key_file:
        pem = key_file.read()
    perform_export(sys.argv[2], pem, "customers", "s3://analytics-drop/customers.parquet")
