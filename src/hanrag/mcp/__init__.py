"""The MCP server (``hanrag mcp``): search, answers and documents for MCP clients, over
stdio or streamable HTTP, scoped by the caller's API key like every other entry point."""
