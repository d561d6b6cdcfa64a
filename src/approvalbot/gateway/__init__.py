"""`approvalbot gateway`: an MCP proxy that turns every tool call of an agent into an approval request.

The gateway sits between the agent (MCP server side) and the real tool servers (MCP client
side) and holds their credentials, so the agent can reach a tool only through a decision.
It talks to approvalbot as the agent, over HTTP, with the ordinary client: nothing here
touches the server's storage.
"""
