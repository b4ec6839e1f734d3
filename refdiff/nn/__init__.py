"""Hand-written layers (forward/backward pairs), models, optimisers (MATH.md chapter 13)."""
