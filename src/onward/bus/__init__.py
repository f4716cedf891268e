"""Live event fan-out. Events reach the bus only after they are committed."""
