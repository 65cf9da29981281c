"""TF-Serving-compatible REST and gRPC server for deployed versions, and its client."""

#: Request bodies above this many bytes get a 413 (REST) / RESOURCE_EXHAUSTED (gRPC).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Requests with more instances than this get a 400 / INVALID_ARGUMENT.
DEFAULT_MAX_BATCH = 10_000
