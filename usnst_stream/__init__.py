"""The live path: the node (subscribe → validate → infer → publish), sockets and the default endpoints, CURVE
security, OpenIGTLink output, the phantom simulator and other sources, the publisher, the recorder, the viewer, the
demo and the benchmark. Wire and file formats are usnst_io's; networks and backends are engines'."""
