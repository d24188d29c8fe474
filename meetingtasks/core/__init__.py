"""The lowest layer: what every part shares and that needs no Redis.

Settings, the exception root, priorities, the task-type registry and the applications that fill it, the wire
format of a message (encoding, signing, sealed fields), logging and tracing, and the background-loop thread.
Nothing here imports any other layer of the package (tests/test_layers.py).
"""
