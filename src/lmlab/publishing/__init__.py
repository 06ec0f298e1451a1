"""`export.py`: runs written for other tools (a Hugging Face model directory, the MLflow model registry)."""
