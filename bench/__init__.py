"""Benchmarks: ``python -m bench`` runs the suite against meetingtasks and stock Celery (see bench/run.py)."""
