"""The code frozen into every edgebundle binary.

It may import only the standard library, NumPy, Pillow and the TFLite interpreter package, and only
relatively within itself: the builder copies this folder into the build as the top-level package
``ebrt``, so it must never import ``edgebundle`` (the builder) or Click. Every import here is paid for
on the device in bytes and milliseconds.
"""
