"""The experience data plane: decision log, feedback join, datasets."""
