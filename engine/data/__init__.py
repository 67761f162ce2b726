"""Data, torch-free: chat rows in the layouts people have -> harmony tokens, masks and packed
rows."""
