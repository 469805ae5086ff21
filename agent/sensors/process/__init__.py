"""The process sensor: a poll of /proc plus kernel exec events, and the facts of followed processes."""
