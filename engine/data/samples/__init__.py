"""Conversations bundled with osstune (`dataset.path: builtin:osstune-sample`)."""
