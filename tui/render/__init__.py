"""Shared presentation: how tokens and run figures look, for the CLI and the wizard alike."""
