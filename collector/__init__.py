"""Umbra collector: receives agents' findings over gRPC, stores them, scores risk.

Data flow: ingest (gRPC listeners, stream and enrollment services, batch writer, fleet monitor)
-> storage (the Store interface and its backends) -> query (the read side: findings, risk,
aggregates, snapshots, exports) -> console (web pages and the JSON API) and cli, which only call query.
risk is the written-down risk model; identity, pki and policy serve ingest.
The collector never imports the agent; both share only the wire package `umbra`.
"""
