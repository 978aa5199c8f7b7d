"""Coral Edge TPU target: predict the compiler's op mapping, compile, run, and deploy to a board."""
