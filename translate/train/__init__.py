"""The training loop shared by every method, and what it needs: runtime, checkpoints, logging."""
