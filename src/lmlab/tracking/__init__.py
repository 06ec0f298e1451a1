"""Experiment tracking: run identity, MLflow runs that survive a resume, and run artifacts."""
