"""Layer caching: early-exit caches on the full model's hidden layers.

The full model is cut into stages (``staging``), each stage but the last gets
a small cache head (``heads``) distilled from the full model's own answers
(``distill``, no labels), each exit gets thresholds for every gate kind
(``calibrate``), and the whole is exported as one multi-method ExecuTorch
program (``program``) that the C++ runtime runs stage by stage. The cloud
tier keeps the heads learning from live traffic (``online``).
"""
