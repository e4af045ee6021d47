"""From probabilities to labels and what is done with labels: instances (the
watershed and its thresholds), planes linked into 3-D objects or tracks,
label edits, measurements, and scores against ground truth (AP at IoU
thresholds, SEG; folders of them for ``napari-unet evaluate``)."""
