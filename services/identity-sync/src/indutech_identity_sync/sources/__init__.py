"""Where identity-sync reads: the scope of each directory and its change signals."""
