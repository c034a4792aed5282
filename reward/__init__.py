"""Everything about human preferences: sampling, the ranking store and app, export, reward models."""
