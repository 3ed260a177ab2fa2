"""Generated from third_party/protos/tei/tei.proto by `make gen` (buf.gen.tei.yaml); do not edit."""
