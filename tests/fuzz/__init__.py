"""The bad-input fuzz harness of issue 19 (see harness.py)."""
