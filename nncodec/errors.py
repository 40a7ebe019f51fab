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


# ---- model files (.pt / .safetensors / .npz), raised by nncodec.io


class ModelFileError(NNCodecError):
    """A model file cannot be read or written as asked."""


class ModelFormatError(ModelFileError, FormatError):
    """The bytes are not a valid file of the format (corrupt, cut short, inconsistent)."""


class UnsupportedModelError(ModelFileError, ValueError):
    """A valid file nncodec does not handle: unknown format, no state_dict, unsupported dtype."""


class PickledObjectError(UnsupportedModelError):
    """A PyTorch file holds pickled Python objects that weights-only loading refuses."""


class PickledModuleError(PickledObjectError):
    """A PyTorch file holds a whole pickled model (an nn.Module) instead of its state_dict."""


class MissingDependencyError(ModelFileError, ImportError):
    """An optional package the format needs (PyTorch) is not installed."""


class OutputExistsError(ModelFileError, FileExistsError):
    """The output file exists and ``force`` was not given."""


# ---- target modes, raised by nncodec.target


class TargetError(NNCodecError, ValueError):
    """No setting on the searched grid meets the requested size or accuracy."""
