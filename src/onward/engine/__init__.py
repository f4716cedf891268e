"""The agent loop, how a run ends (completed, cancelled, failed, interrupted) and history repair."""
