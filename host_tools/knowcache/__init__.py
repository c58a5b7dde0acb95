"""knowcache: two-stage on-device inference.

The device answers what its cached, specialized models are sure of; the cloud
answers the rest and tells the device which partition to cache next.
"""

__version__ = "0.1.0"
