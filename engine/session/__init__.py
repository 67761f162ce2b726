"""One run as the front-ends see it, torch-free: the engine process and its events."""
