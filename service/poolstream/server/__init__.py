"""The gRPC front end: handlers, health, reflection, errors and conversions."""
