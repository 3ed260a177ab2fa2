"""TEI's gRPC API (tei.v1) served over the same serving core as poolstream.v1."""
