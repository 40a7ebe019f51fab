"""nncodec: compress trained neural-network weights into a compact, checksummed bitstream."""
from .errors import (ChecksumError, FormatError, LimitError, NNCodecError, TruncatedError,
                     VersionError)

__version__ = "0.1.0"

__all__ = ["ChecksumError", "FormatError", "LimitError", "NNCodecError", "TruncatedError",
           "VersionError", "__version__"]

from .api import NNCFile, decode, default_threads, encode, load_file, open, save_file  # noqa: E402,A004
from .pipeline import Settings  # noqa: E402
from .target import encode_to_target  # noqa: E402

__all__ += ["NNCFile", "Settings", "decode", "default_threads", "encode", "encode_to_target", "load_file", "open", "save_file"]
