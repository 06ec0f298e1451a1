"""Objective studies: pretrain objectives at an equal budget, fine-tune each on tasks over seeds, report."""
