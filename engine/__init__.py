"""osstune's engine, in four layers (tests/test_import_contract.py enforces the arrows):

- `plan`     torch-free: the run config schema, hardware probe, recommender, pre-flight, FLOPs;
- `data`     torch-free: chat rows -> harmony tokens and masks, tokenizer, packing, cache;
- `session`  torch-free: one run as the front-ends see it: launch, events, follow;
- `trainer`  torch: the process that trains (`python -m osstune.engine.trainer.train`).

plan, data and session never import torch, transformers or the front-ends (`osstune.tui`);
the trainer never imports the front-ends either.
"""
