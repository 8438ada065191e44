"""cnnkit.viz."""
