"""Background work: RQ jobs for delivery, and the ticker that expires, reminds and dispatches."""
