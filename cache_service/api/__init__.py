"""The HTTP layer: route table, thin handlers, the error/auth/metrics middlewares, and the
OpenAPI document generated from the same route table and wire models."""
