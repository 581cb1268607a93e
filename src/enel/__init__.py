"""enel: the encoder-free 3D large multimodal model ENEL (arXiv 2502.09620)."""

__version__ = "0.1.0"
