"""translate: image-to-image translation (pix2pix, CycleGAN, StarGAN) on one shared spine."""

__version__ = "0.1.0"
