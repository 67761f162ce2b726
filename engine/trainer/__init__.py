"""The training process (imports torch): model, levers, loop, checkpoints, export."""
