"""The worker process: Temporal client, interceptors and registration."""
