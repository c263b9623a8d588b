"""The few API-server interactions kubeadm's protocol needs (bootstrap objects, discovery, certs)."""
