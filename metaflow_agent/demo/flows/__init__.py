"""Example flows the demo runs; copied into the demo root and run from there."""
