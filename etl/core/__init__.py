"""The system-neutral engine: HTTP, the mirror, pulling, pushing, pipelines and runs.
Nothing here imports a connector; connectors import it."""
