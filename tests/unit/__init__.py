"""Unit tier: pure functions and the fast CLI paths; no model is loaded (seconds each).

`make test-fast` runs this folder alone."""
