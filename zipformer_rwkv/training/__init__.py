"""Training: checkpoint io / averaging / selection, optimizers and schedules, DDP helpers,
hooks, per-batch RNG seeding and resume."""
