"""The code frozen into every edgebundle binary.

It may import only the standard library, Pillow, the TFLite interpreter (a package's Python API, or
LiteRT's C API through ctypes: litert.py) and NumPy, the last only in the interpreter binding (model.py,
where the Python APIs need it): binaries of LiteRT's C API carry no NumPy.
And only relatively within itself: the builder copies this folder into the build as the top-level package
``ebrt``, so it must never import ``edgebundle`` (the builder) or Click. Every import here is paid for
on the device in bytes and milliseconds.
"""
