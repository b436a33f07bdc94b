"""recsys: store intelligence on Keras and KerasHub."""

__version__ = "0.1.0"
