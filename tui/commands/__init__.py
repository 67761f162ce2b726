"""One module per CLI command group; each is torch-free at import time."""
