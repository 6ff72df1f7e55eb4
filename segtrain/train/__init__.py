"""Training: the loop (trainer), checkpoints, run directories, stopping, logging, distribution."""
