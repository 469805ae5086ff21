"""The AI tooling sensor: agents, MCP servers and AI extensions (sensor.py is the entry point)."""
