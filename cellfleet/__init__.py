"""cellfleet: a durable code-mode runtime (JavaScript cells in V8, event-sourced on Redis).

The product's top-level folders are its subpackages: `cellfleet.actors` (the session and
cell actors, the V8 runtime), `cellfleet.broker` (the model-facing contract and the wire),
`cellfleet.projections` (pure folds of the event log) and `cellfleet.ops` (the command
line, the in-process host, the embedded Redis, benchmarks). Here they are links to those
folders, so that everything imports under this one name.
"""
