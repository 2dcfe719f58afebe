"""CivicPulse Engine: civic and facility incident reports, from intake to accountability."""

__version__ = "0.1.0"
