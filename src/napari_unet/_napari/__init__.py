"""The napari face of napari-unet: dock widgets, sample data, reader and writer.

Everything here is a thin shell over the core library; long work runs in
napari thread workers that drive the core's progress generators.
"""
