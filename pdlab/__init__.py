"""pdlab: a lab kit for the prefill/decode split in LLM serving."""

__version__ = "0.1.0"
