"""The `courierguard` command line: thin commands over the core services."""
