"""segtrain: binary segmentation of multi-band satellite scenes, trained as PBS batch jobs."""
__version__ = "0.1.0"
