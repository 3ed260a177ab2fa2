"""Model directories, the architecture registry, and model implementations."""
