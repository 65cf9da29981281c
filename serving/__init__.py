"""TF-Serving-compatible REST and gRPC server for deployed versions, and its client."""
