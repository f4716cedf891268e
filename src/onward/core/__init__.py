"""Pure values: runs, messages and events. No I/O lives in this package."""
