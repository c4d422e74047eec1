"""The callgate process: CLI, service wiring (FastAGI + HTTP in one process), demo data."""
