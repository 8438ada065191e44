"""cnnkit.training."""
