"""Offline bundles: everything a cluster of one Kubernetes version needs with no network (packages, image archives,
kubectl), with a manifest of digests. `manifest` is pure; `build` makes one; `up --bundle` installs only from one."""
