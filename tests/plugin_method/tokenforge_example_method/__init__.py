"""A stand-in third-party method (tests only)."""
