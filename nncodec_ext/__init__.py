"""Compiled hot loops of nncodec (Cython). No policy lives here: see ``nncodec``."""
