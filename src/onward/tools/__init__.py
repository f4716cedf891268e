"""The agent's tools: one registry, one module per tool, commands spawned through a sandbox."""
