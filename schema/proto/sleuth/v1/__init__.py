"""Generated gRPC code lives here; the .proto files are the source."""
