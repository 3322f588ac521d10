"""identity-sync (flow 6): on-prem AD <-> AWS Managed Microsoft AD, bidirectional and loop-free."""
