"""What every training stage shares: accelerator, loading, adapters, tracking, checkpoints, data."""
