"""Recipes as data: one YAML file per preset, shipped with the package (see engine.plan.config)."""
