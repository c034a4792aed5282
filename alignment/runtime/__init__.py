"""What every training stage shares: accelerator, the loop, optimizer, generation, per-token log-probs, loading,
adapters, data, tracking, checkpoints, manifests."""
