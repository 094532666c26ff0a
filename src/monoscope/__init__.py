"""monoscope: which features of a vision-language model belong to vision, language, or both."""

__version__ = "0.1.0"
