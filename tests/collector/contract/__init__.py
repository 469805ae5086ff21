"""Contract suites every implementation of an interface must pass (imported by the backend test modules)."""
