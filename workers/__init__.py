"""Worker entry points a deployment runs: ``python -m workers.<service> [celery worker options]``.

Each is the same as ``meetingtasks worker <service>``; ``celery -A workers.<service> worker`` works too.
"""
