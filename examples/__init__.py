"""Applications built on meetingtasks outside its package; import them from the repository root."""
