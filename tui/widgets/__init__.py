"""Reusable widgets of the wizard; each takes plain data, never reads files or processes itself."""
