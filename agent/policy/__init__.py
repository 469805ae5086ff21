"""What is approved: the local policy's rules and the policy the collector pushes."""
