"""edgeopt: take a trained model to edge devices and prove how it runs there."""

__version__ = "0.1.0"
