"""Worker-side parts: the guarded transport, consumer and request classes, and the background loops."""
