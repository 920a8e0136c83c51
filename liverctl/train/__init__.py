"""Training: the loop (`loop.run_training`), its set-up, the NaN guard, devices and DDP."""
