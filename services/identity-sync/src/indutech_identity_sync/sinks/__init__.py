"""Where identity-sync writes: each directory (and the audit log)."""
