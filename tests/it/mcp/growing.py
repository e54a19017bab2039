"""An MCP server on the official Python SDK whose tool `grow` adds a tool `grown` and tells
the client that its tool list changed (`notifications/tools/list_changed`)."""
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("growing")


def grown() -> str:
    """Added by grow."""
    return "grown here"


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds the tool `grown`."""
    server.add_tool(grown, name="grown", description="Added by grow.")
    # Sent on the session itself: `ctx.notify_tools_changed()` reaches only the newer
    # revision's `subscriptions/listen` streams, which the client here does not open.
    await ctx.session.send_tool_list_changed()
    return "added"


server.run()
