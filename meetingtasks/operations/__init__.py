"""Running the platform: the embedded Redis and Sentinel of ``up``, the process supervisor, the demo, Flower,
and the generator of the reference tables in docs/. Nothing below this layer imports it (tests/test_layers.py).
"""
