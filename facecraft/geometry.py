"""`facecraft.geometry` is `data_pipelines.geometry`: boxes, IoU, box regression, landmark schemes.

The math is numpy-only and every layer needs it, so it lives on the floor of the import graph
(experiments -> facecraft -> data_pipelines); this name keeps user code working.
"""

import sys

from data_pipelines import geometry as _geometry

sys.modules[__name__] = _geometry
