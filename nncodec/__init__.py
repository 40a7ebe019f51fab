"""nncodec: compress trained neural-network weights into a compact, checksummed bitstream."""
from .errors import (ChecksumError, FormatError, LimitError, NNCodecError, TruncatedError,
                     VersionError)

__version__ = "0.1.0"

__all__ = ["ChecksumError", "FormatError", "LimitError", "NNCodecError", "TruncatedError",
           "VersionError", "__version__"]
