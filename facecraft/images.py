"""`facecraft.images` is `data_pipelines.images`: decoding any picture to uint8 RGB.

Decoding is numpy/PIL-only and every layer needs it, so it lives on the floor of the import graph
(experiments -> facecraft -> data_pipelines); this name keeps user code working.
"""

import sys

from data_pipelines import images as _images

sys.modules[__name__] = _images
