"""What SREs see: the audit log, Kubernetes Events and Prometheus metrics."""
