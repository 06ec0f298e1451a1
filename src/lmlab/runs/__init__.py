"""The run core every stage uses: Trainer and logger builders, optimiser and schedules, checkpoints and resume,
config drift, the entry-point wrapper (composition checks, job-dir ownership, refusals), run tracking, and the export
writer and reader. It knows no specific objective, task or stage."""
