"""cnnkit.io."""
