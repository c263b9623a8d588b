"""kubeboot: kubeadm-compatible HA Kubernetes clusters over SSH."""

__version__ = "0.1.0"
