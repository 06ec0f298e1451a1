"""Reinforcement-learning fine-tuning of a generator against a reward (REINFORCE, RLOO, GRPO), with a KL penalty
to the frozen starting policy."""
