"""The console for the people who run desksync: served over HTTP by `desksync ui`."""
