"""pytest plugin entry point (registered as ``resurgence_gate``); the gate's options arrive with the gate."""
