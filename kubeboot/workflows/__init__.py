"""Shell: one module per user verb, each built from phases and the kube/transport layers (cli.py only parses flags)."""
