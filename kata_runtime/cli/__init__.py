"""The runc-compatible command line: one small module per command; behaviour lives in the library."""
