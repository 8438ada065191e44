"""Small shared helpers (random state, atomic file writes)."""
