"""Performance levers for GPT-OSS training, one module per lever (loss, attention, experts, ...)."""
