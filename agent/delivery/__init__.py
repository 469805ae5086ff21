"""Findings on their way out: the tracker (ids, dedupe), the durable spool, the gRPC stream."""
