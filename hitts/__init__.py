"""HiTTs annotation assist: pseudo-labels for the dense tasks an image is missing.

The code lives in three top-level folders, installed as ``hitts.model`` (the network and how it
learns, with the datasets it reads), ``hitts.app`` (command line, FiftyOne store, review page) and
``hitts.exporters`` (label layouts and ONNX out).
"""

__version__ = "0.1.0"
