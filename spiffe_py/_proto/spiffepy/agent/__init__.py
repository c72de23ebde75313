"""Generated protobuf and gRPC modules. Regenerate with scripts/genproto.py."""
