"""kopf glue: watch events in, reconcile passes out. Decisions live elsewhere."""
