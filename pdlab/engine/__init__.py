"""The measured clock: pdlab's real toy model (``model``, ``tokenizer``), the executor that runs a
``Batch`` through it over a paged KV cache and times it (``executor``), ``pdlab calibrate``
(time batch shapes, fit the cost model) and ``pdlab generate``. Importing this package does not
import torch; its modules do."""
