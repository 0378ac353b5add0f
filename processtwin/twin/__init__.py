"""The live twin runtime: validation at the door, a crash-safe HDF5 historian, and the
twin that advances on each batch of samples (``processtwin.twin``)."""

from .core import Batch, Twin, TwinRecommendation
from .historian import Historian, read_historian
from .validate import REASONS, Sample, Validator

__all__ = ["REASONS", "Batch", "Historian", "Sample", "Twin", "TwinRecommendation",
           "Validator", "read_historian"]
