"""Cross-system pipelines: mirror rows of one connection mapped into another platform's mirror
tables and sent by that platform's connector (its push tables), with an id map (`pipeline_links`)."""
