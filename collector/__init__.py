"""Umbra collector: receives agents' findings over gRPC, stores them, scores risk.

Modules: server (gRPC StreamService), identity (who a stream is), storage (Store interface and
backends), risk (scores), views (JSON documents), http_api (read-only API), table and cli.
The collector never imports the agent; both share only the wire package `umbra`.
"""
