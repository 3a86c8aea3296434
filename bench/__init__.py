"""Benchmarks of the orchestrator against raw Celery and bare Flask baselines (``make bench``)."""
