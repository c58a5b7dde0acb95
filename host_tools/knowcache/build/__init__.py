"""The model-building pipeline: what `knowcache train|specialize|partition|export|
build-models` run (pipeline.py), from training (training.py) through knowledge
caching (specialize.py), CacheNet partitions (partitioning.py), int8
quantization (quantize.py) and lowering to ExecuTorch programs (lower.py) to
gate calibration (calibration.py) and publishing a models folder: programs,
manifest, metrics and model card (publish.py, model_card.py). flops.py counts
what a program costs.

Nothing here runs on the device or in the cloud; the layer-caching build is
``knowcache.layer_cache`` and manifests are ``knowcache.manifest``."""
