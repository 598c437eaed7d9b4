"""Float64 reference implementations, written simply and independently of ``spectrumkd.losses``."""
