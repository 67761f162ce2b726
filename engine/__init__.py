"""osstune's training engine. Modules that import torch are loaded only by the engine process;
`config`, `events`, `hardware`, `recommend` and `launch` stay torch-free for the front-ends."""
