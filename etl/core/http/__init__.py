"""HTTP layer: one session per account, its rate limiters, and the only retry loop."""
