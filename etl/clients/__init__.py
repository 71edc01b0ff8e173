"""One module per remote system: how to talk to it, and how its answers are shaped."""
