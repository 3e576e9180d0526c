"""The process edge: settings, the CLI, the gRPC server and the in-process pipeline host."""
