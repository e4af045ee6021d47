"""Images in and out: reading and writing files (TIFF, PNG, OME-Zarr, ...),
normalization, where the planes and channels of an image are, atomic writes,
and synthetic or sample images."""
