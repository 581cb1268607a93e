"""Point clouds without any language model: file I/O, transforms and batched torch ops."""
