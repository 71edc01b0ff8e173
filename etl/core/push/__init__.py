"""Push local changes of the mirror: the journal, field diffs and conflict policies."""
