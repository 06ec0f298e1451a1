"""Fine-tuning a pretrained run (or a fresh backbone) on a downstream task, with lineage in MLflow."""
