"""Shell: how commands reach a host — the Transport protocol, SSH (fabric) and local implementations."""
