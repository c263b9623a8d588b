"""Phases: one module per phase, each a value (name, summary, roles, plan function); the runner executes them."""
