"""Data in: event logs and tables, batch features, zero-config specs, replays through the fold."""
