"""Importers for official published weights, producing this project's parameter trees.

Each importer reads arrays only (h5py for MATLAB v7.3 ``.mat``, plain text parsing) and never
executes anything from the file. The returned trees are the ``params`` collection of the
matching ``genrepair.models`` module:

- :func:`load_dncnn_matconvnet`: DnCNN MatConvNet ``.mat`` (Zhang et al., TIP 2017) ->
  ``dncnn.DnCNN(**dncnn_config(params))`` (BatchNorm merged).
- :func:`load_srcnn_text`: SRCNN text weights (Dong et al., TPAMI 2016) ->
  ``srcnn.SRCNN(**srcnn_config(params))`` (edge-replicate padding, as ``SRCNN.m``).

:func:`import_weights` (``launch.py import``) turns either into a run directory's step-0
checkpoint.
"""

from genrepair.weights.convert import IMPORTERS
from genrepair.weights.convert import import_weights
from genrepair.weights.matconvnet import dncnn_config
from genrepair.weights.matconvnet import load_dncnn_matconvnet
from genrepair.weights.srcnn_text import load_srcnn_text
from genrepair.weights.srcnn_text import read_matlab_text
from genrepair.weights.srcnn_text import srcnn_config

__all__ = ["IMPORTERS", "import_weights", "dncnn_config", "load_dncnn_matconvnet", "load_srcnn_text", "read_matlab_text",
           "srcnn_config"]
