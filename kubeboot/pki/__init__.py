"""Pure core: certificates, keys and the cluster PKI plan (no SSH, no terminal, no disk)."""
