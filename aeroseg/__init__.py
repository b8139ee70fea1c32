"""AerOSeg: open-vocabulary semantic segmentation of remote-sensing imagery."""
__version__ = "0.1.0"
