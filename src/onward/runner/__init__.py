"""Who executes runs. Embedded mode: an in-process runner on the server's event loop."""
