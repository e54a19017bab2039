"""An MCP server on the official Python SDK over streamable HTTP with sessions, one tool
`echo`, on the port given as its argument. A new process knows no session of the one before
and answers a request on one with 404, as the protocol asks."""
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("http-echo", log_level="WARNING")


@server.tool()
def echo(message: str) -> str:
    """Echoes the message."""
    return f"Echo: {message}"


server.run("streamable-http", port=int(sys.argv[1]))
