"""Image-quality metrics with an explicit measurement protocol (see ``image_quality``)."""

from genrepair.metrics.image_quality import Protocol
from genrepair.metrics.image_quality import SSIM_CONVENTION
from genrepair.metrics.image_quality import psnr
from genrepair.metrics.image_quality import rgb_to_y
from genrepair.metrics.image_quality import ssim

__all__ = ["Protocol", "SSIM_CONVENTION", "psnr", "rgb_to_y", "ssim"]
