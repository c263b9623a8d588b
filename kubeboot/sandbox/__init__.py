"""`kubeboot sandbox`: a real HA cluster on one Linux machine -- hosts with systemd as PID 1 (systemd-nspawn) on a
private bridge inside their own network namespace, reached over real SSH by the real `kubeboot up`."""
