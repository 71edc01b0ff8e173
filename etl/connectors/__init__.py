"""The remote systems, one package each: client, streams, mirror models, diff rules, loaders,
simulator, and the `Connector` that hands them to the engine (etl.connectors.registry)."""
