"""Pretraining runs: config schema, the LightningModule, the optimiser and the orchestration."""
