"""Pure core: every file a host needs, as Artifacts, from the config, the PKI and the clock (no I/O)."""
