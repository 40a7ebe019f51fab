"""The one error hierarchy of nncodec.

Callers catch ``NNCodecError`` for anything nncodec raises on purpose, or a
subclass to be precise. Decoders fed arbitrary bytes raise only ``FormatError``
(or its subclasses), never another exception type.
"""


class NNCodecError(Exception):
    """Base class of every error nncodec raises on purpose."""


class FormatError(NNCodecError, ValueError):
    """The bytes are not a valid stream: corrupt, cut short, or inconsistent."""


class TruncatedError(FormatError):
    """The data ends before the stream does."""


class ChecksumError(FormatError):
    """A stored checksum does not match the data."""


class VersionError(FormatError):
    """The stream declares a version or feature this nncodec does not know."""


class LimitError(FormatError):
    """The stream asks for more than the decoder's declared limits allow."""
