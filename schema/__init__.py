"""The contracts: event models, the graph allow-list, constraints, the store protocol, the gRPC API."""
