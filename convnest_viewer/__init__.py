"""ConvNeXt Brain MRI Viewer: open MRI studies, classify every slice, show the evidence."""

__version__ = "0.1.0"
