"""HTTP routers. Each handler resolves the caller first; another user's ids are simply not found."""
