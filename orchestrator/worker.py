"""Celery entry point for the worker, beat and Flower: ``celery -A orchestrator.worker``."""

from .celery_app import celery_from_environment

app = celery_from_environment()
