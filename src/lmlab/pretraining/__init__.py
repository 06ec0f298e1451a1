"""Pretraining: the config schema, the LightningModule, the run and held-out evaluation."""
