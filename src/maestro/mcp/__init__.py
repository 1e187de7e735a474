"""Maestro's tools for agents over the Model Context Protocol: `maestro mcp` (stdio) and `/mcp`
on the server (streamable HTTP). The tools are thin clients of the REST API, so every rule and
right stays in the service. Importing this package is cheap; the MCP SDK is loaded only by the
modules that serve the tools."""
